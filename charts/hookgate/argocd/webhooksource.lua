-- Argo CD health of a hookgate.dev WebhookSource (argocd-cm key
-- resource.customizations.health.hookgate.dev_WebhookSource).
-- Healthy: the operator observed the current generation and Ready is True (the URL is in
-- force; a disabled source is Healthy too, and says so). Degraded: Ready is False, with the
-- operator's reason and message. Progressing: no status yet, or status of an older generation.
-- Written for Argo CD's Lua 5.1 (gopher-lua); tested with Lua 5.4.
local hs = {}
local generation = obj.metadata and obj.metadata.generation
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the hookgate operator to reconcile the source"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the hookgate operator to observe generation " .. tostring(generation)
  return hs
end
local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
if ready == nil or (generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
local message = ready.message or ""
if ready.status == "True" then
  hs.status = "Healthy"
  if ready.reason == "Disabled" then
    hs.message = "Disabled: " .. message
  elseif status.url ~= nil then
    hs.message = message .. " at " .. status.url
  else
    hs.message = message
  end
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. message
else
  hs.status = "Progressing"
  hs.message = (ready.reason or "Unknown") .. ": " .. message
end
return hs
