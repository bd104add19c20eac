//! Compiling a `MappingSpec` once, when the Mapping is accepted, into a [`CompiledMapping`].

use std::fmt;
use std::sync::Arc;

use crate::api::mapping::MappingSpec;

use super::lookup::Lookups;
use super::privacy::CompiledPrivacy;
use super::request::Scope;
use super::template::{Path, Template, Variable, parse_path};

/// One problem in a Mapping spec, phrased for the Mapping's `Ready` condition:
/// `event.email: position 14: unknown filter "lowr" (expected default, lower, trim, sha256)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    /// The spec field, as written in YAML (`event.email`, `when[0].path`, `privacy.drop[1]`).
    pub field: String,
    /// 1-based character position within the field's template, when the problem has one.
    pub position: Option<usize>,
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(position) => write!(f, "{}: position {}: {}", self.field, position, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Every problem found in a spec (compilation does not stop at the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileErrors(pub Vec<CompileError>);

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileErrors {}

/// A Mapping ready to evaluate: every template parsed and every path resolved to segments.
#[derive(Clone, Debug)]
pub struct CompiledMapping {
    pub(crate) name: Arc<str>,
    /// Checked once per request.
    pub(crate) conditions: Box<[Condition]>,
    /// Conditions reading `$item`: checked per forEach element, filtering the elements.
    pub(crate) item_conditions: Box<[Condition]>,
    pub(crate) for_each: Option<Template>,
    pub(crate) event: CompiledEvent,
    pub(crate) privacy: CompiledPrivacy,
    /// The body paths the event's templates read, resolved together once the conditions hold.
    pub(crate) lookups: Lookups,
    reads: Box<[Path]>,
}

#[derive(Clone, Debug)]
pub(crate) struct CompiledEvent {
    pub(crate) name: Template,
    /// The name when it is a constant: shared by every event instead of copied into each.
    pub(crate) constant_name: Option<Arc<str>>,
    pub(crate) id: Option<Template>,
    pub(crate) visitor_id: Option<Template>,
    pub(crate) external_id: Option<Template>,
    pub(crate) email: Option<Template>,
    pub(crate) timestamp: Option<Template>,
    pub(crate) properties_from: Option<Template>,
    /// Sorted by key, so the engine merges them with `properties.from` in one pass.
    pub(crate) fields: Box<[(String, Template)]>,
}

impl CompiledEvent {
    fn templates_mut(&mut self) -> impl Iterator<Item = &mut Template> {
        std::iter::once(&mut self.name)
            .chain(
                [
                    self.id.as_mut(),
                    self.visitor_id.as_mut(),
                    self.external_id.as_mut(),
                    self.email.as_mut(),
                    self.timestamp.as_mut(),
                    self.properties_from.as_mut(),
                ]
                .into_iter()
                .flatten(),
            )
            .chain(self.fields.iter_mut().map(|(_, template)| template))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Condition {
    template: Template,
    test: Test,
}

#[derive(Clone, Debug)]
enum Test {
    Equals(Box<str>),
    Exists(bool),
    In(Box<[String]>),
    Prefix(Box<str>),
}

impl Condition {
    /// Values compare as text: the number 42 equals `"42"`; missing and null never equal,
    /// start with or belong to anything.
    pub(crate) fn holds(&self, scope: &Scope<'_>) -> bool {
        let value = self.template.evaluate(scope);
        match &self.test {
            Test::Exists(wanted) => value.is_missing() != *wanted,
            Test::Equals(expected) => value.text().is_some_and(|t| *t == **expected),
            Test::In(allowed) => value
                .text()
                .is_some_and(|t| allowed.iter().any(|a| *a == *t)),
            Test::Prefix(prefix) => value.text().is_some_and(|t| t.starts_with(&**prefix)),
        }
    }
}

impl CompiledMapping {
    /// Compiles a spec. `name` is the Mapping's `metadata.name`, carried into events and errors.
    pub fn compile(name: &str, spec: &MappingSpec) -> Result<Self, CompileErrors> {
        let mut c = Compiler {
            errors: Vec::new(),
            for_each: None,
        };

        let for_each = spec
            .for_each
            .as_deref()
            .and_then(|source| c.for_each(source));
        c.for_each = for_each.as_ref().and_then(|t| match t.bare_variable() {
            Some(Variable::Body(path)) => Some(path.clone()),
            _ => None,
        });

        let mut conditions = Vec::new();
        let mut item_conditions = Vec::new();
        for (i, when) in spec.when.iter().enumerate() {
            let Some(condition) = c.condition(i, when) else {
                continue;
            };
            if condition.template.item_position().is_some() {
                item_conditions.push(condition);
            } else {
                conditions.push(condition);
            }
        }

        let e = &spec.event;
        let name_template = c.template("event.name", &e.name);
        if e.name.trim().is_empty() {
            c.error("event.name", None, "must not be empty");
        }
        let event = (
            c.optional("event.id", e.id.as_deref()),
            c.optional("event.visitorId", e.visitor_id.as_deref()),
            c.optional("event.externalId", e.external_id.as_deref()),
            c.optional("event.email", e.email.as_deref()),
            c.optional("event.timestamp", e.timestamp.as_deref()),
            c.optional(
                "event.properties.from",
                e.properties.as_ref().and_then(|p| p.from.as_deref()),
            ),
        );
        let mut fields: Vec<(String, Template)> = e
            .properties
            .iter()
            .flat_map(|p| p.fields.iter().flatten())
            .filter_map(|(key, source)| {
                let template = c.template(&format!("event.properties.fields.{key}"), source)?;
                Some((key.clone(), template))
            })
            .collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        if e.visitor_id.is_none() && e.email.is_none() && e.external_id.is_none() {
            c.error(
                "event",
                None,
                "needs an identity: set at least one of visitorId, email or externalId",
            );
        }

        let privacy =
            CompiledPrivacy::compile(spec.privacy.as_ref(), &mut |field, position, message| {
                c.error(&field, position, &message)
            });

        let (Some(name_template), true) = (name_template, c.errors.is_empty()) else {
            return Err(CompileErrors(c.errors));
        };
        let (id, visitor_id, external_id, email, timestamp, properties_from) = event;
        let constant_name = match name_template.static_value() {
            Some(serde_json::Value::String(name)) if !name.trim().is_empty() => {
                Some(name.as_str().into())
            }
            _ => None,
        };
        let mut event = CompiledEvent {
            name: name_template,
            constant_name,
            id,
            visitor_id,
            external_id,
            email,
            timestamp,
            properties_from,
            fields: fields.into(),
        };
        let mut lookups = Lookups::default();
        for template in event.templates_mut() {
            template.use_lookups(&mut lookups);
        }
        // A projected body has no tree to search ([`super::ProjectedBody::Values`]): every
        // body path is a slot, the conditions' and the forEach array's too.
        let mut for_each = for_each;
        for template in conditions
            .iter_mut()
            .chain(item_conditions.iter_mut())
            .map(|c| &mut c.template)
            .chain(for_each.as_mut())
        {
            template.use_lookups(&mut lookups);
        }
        let mut mapping = CompiledMapping {
            name: name.into(),
            conditions: conditions.into(),
            item_conditions: item_conditions.into(),
            for_each,
            event,
            privacy,
            lookups,
            reads: Box::default(),
        };
        mapping.reads = mapping.collect_reads(c.for_each.as_ref());
        Ok(mapping)
    }

    /// The Mapping's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every body path a template of this mapping reads, `$item` paths expanded to
    /// `forEach` path + `0` + item path. A path also reads everything below it — except the
    /// forEach path itself, which only selects the array: reading it adds nothing.
    pub fn read_paths(&self) -> &[Path] {
        &self.reads
    }

    /// The forEach array's path, if the mapping has one.
    pub fn for_each_path(&self) -> Option<&Path> {
        match self.for_each.as_ref()?.bare_variable()? {
            Variable::Body(path) => Some(path),
            _ => None,
        }
    }

    fn templates(&self) -> impl Iterator<Item = &Template> {
        let e = &self.event;
        self.conditions
            .iter()
            .chain(self.item_conditions.iter())
            .map(|c| &c.template)
            .chain(std::iter::once(&e.name))
            .chain(
                [
                    &e.id,
                    &e.visitor_id,
                    &e.external_id,
                    &e.email,
                    &e.timestamp,
                    &e.properties_from,
                ]
                .into_iter()
                .flatten(),
            )
            .chain(e.fields.iter().map(|(_, t)| t))
    }

    fn collect_reads(&self, for_each: Option<&Path>) -> Box<[Path]> {
        let first = Path::from_keys(["0"]);
        let mut reads: Vec<Path> = Vec::new();
        for expr in self.templates().flat_map(Template::expressions) {
            let path = match (&expr.variable, for_each) {
                (Variable::Body(path), _) => path.clone(),
                (Variable::Item(path), Some(array)) => array.join(&first).join(path),
                _ => continue,
            };
            if !reads.contains(&path) {
                reads.push(path);
            }
        }
        reads.into()
    }
}

struct Compiler {
    errors: Vec<CompileError>,
    /// The forEach array path, once known to be valid; `$item` is an error without it.
    for_each: Option<Path>,
}

impl Compiler {
    fn error(&mut self, field: &str, position: Option<usize>, message: &str) {
        self.errors.push(CompileError {
            field: field.to_owned(),
            position,
            message: message.to_owned(),
        });
    }

    fn template(&mut self, field: &str, source: &str) -> Option<Template> {
        match Template::parse(source) {
            Ok(template) => {
                if self.for_each.is_none()
                    && let Some(position) = template.item_position()
                {
                    self.error(
                        field,
                        Some(position),
                        "$item is only available with forEach",
                    );
                    return None;
                }
                Some(template)
            }
            Err(e) => {
                self.error(field, Some(e.position), &e.message);
                None
            }
        }
    }

    fn optional(&mut self, field: &str, source: Option<&str>) -> Option<Template> {
        self.template(field, source?)
    }

    fn for_each(&mut self, source: &str) -> Option<Template> {
        let template = match Template::parse(source) {
            Ok(template) => template,
            Err(e) => {
                self.error("forEach", Some(e.position), &e.message);
                return None;
            }
        };
        match template.bare_variable() {
            Some(Variable::Body(_)) => Some(template),
            _ => {
                self.error(
                    "forEach",
                    None,
                    "must be exactly one body path without filters, such as {{items}} ({{.}} when the body is the array)",
                );
                None
            }
        }
    }

    fn condition(
        &mut self,
        index: usize,
        when: &crate::api::mapping::WhenCondition,
    ) -> Option<Condition> {
        let field = format!("when[{index}]");
        let tests = [
            when.equals.as_deref().map(|v| Test::Equals(v.into())),
            when.exists.map(Test::Exists),
            when.in_.as_ref().map(|v| Test::In(v.clone().into())),
            when.prefix.as_deref().map(|v| Test::Prefix(v.into())),
        ];
        let mut set = tests.into_iter().flatten();
        let test = match (set.next(), set.next()) {
            (Some(test), None) => Some(test),
            _ => {
                self.error(
                    &field,
                    None,
                    "set exactly one of equals, exists, in or prefix",
                );
                None
            }
        };
        let template = self.template(&format!("{field}.path"), &when.path)?;
        if template.is_static() {
            let source = when.path.trim();
            self.error(
                &format!("{field}.path"),
                None,
                &format!(
                    "\"{source}\" is a fixed value; write {{{{{source}}}}} to read that field"
                ),
            );
            return None;
        }
        Some(Condition {
            template,
            test: test?,
        })
    }
}

/// Checks a bare path written in the spec (privacy paths), reporting errors against `field`.
pub(crate) fn spec_path(source: &str) -> Result<Path, (Option<usize>, String)> {
    parse_path(source.trim()).map_err(|e| (Some(e.position), e.message))
}
