-- Argo CD health check for TMO's custom resources (tmo.dev TransformerModel and Rollout).
-- Install it for both kinds, e.g. in argocd-cm:
--   resource.customizations.health.tmo.dev_TransformerModel: |  <this file>
--   resource.customizations.health.tmo.dev_Rollout: |           <this file>
-- It reads only the standard conditions TMO writes (Ready, Reconciling, Stalled) and the integer
-- observedGeneration, the same signals Flux's kstatus uses, so both tools agree.
local hs = {}

local function condition(obj, type)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type then
        return c
      end
    end
  end
  return nil
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the TMO operator to observe this resource"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the TMO operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(obj, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end

local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end

-- A Rollout waiting for `tmo rollout promote` (pause: {}) or held by spec.paused.
if ready ~= nil and (ready.reason == "AwaitingApproval" or ready.reason == "Paused") then
  hs.status = "Suspended"
  hs.message = ready.message or "Waiting for approval: tmo rollout promote"
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil then
  hs.message = ready.message
else
  local reconciling = condition(obj, "Reconciling")
  hs.message = (reconciling ~= nil and reconciling.message) or "Reconciling"
end
return hs
