-- Argo CD health of a hookgate.dev Mapping (argocd-cm key
-- resource.customizations.health.hookgate.dev_Mapping).
-- Healthy: the operator observed the current generation, the templates compiled and the
-- source exists (Ready True). Degraded: Ready is False, e.g. InvalidTemplate with the position
-- of the error, or SourceNotFound. Progressing: no status yet, or status of an older generation.
-- Written for Argo CD's Lua 5.1 (gopher-lua); tested with Lua 5.4.
local hs = {}
local generation = obj.metadata and obj.metadata.generation
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the hookgate operator to compile the mapping"
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
  hs.message = message
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. message
else
  hs.status = "Progressing"
  hs.message = (ready.reason or "Unknown") .. ": " .. message
end
return hs
