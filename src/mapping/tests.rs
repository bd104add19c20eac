//! Engine tests against realistic fixtures.
