-- The miss path, inside Envoy. Every route the control plane gives turns this filter off, so
-- it runs only for a request that found no route: a user with no scope in this Envoy yet.
-- It asks the control plane to place the user, which answers once this Envoy holds the user's
-- scope, then selects that scope: the request goes to the user's pod. Values in @..@ are
-- filled in by the control plane (resources.py).
local KEY_HEADER = @KEY_HEADER@
local FALLBACK_KEY = @FALLBACK_KEY@
local CLUSTER = @CLUSTER@
local PATH = @PATH@
local GROUP = @GROUP@
local ATTEMPTS = 3

-- Selects the scope with this key; returns the metadata of the route it gives, if any.
local function select(handle, key)
  handle:headers():replace(KEY_HEADER, key)
  handle:clearRouteCache()
  return handle:metadata()
end

function envoy_on_request(handle)
  -- The fallback scope balances every service: its route tells which service this is.
  local route = select(handle, FALLBACK_KEY)
  local service = route:get("service")
  if service == nil then
    return -- no service of ours answers to this host: Envoy's own 404
  end
  local uid = handle:headers():get(route:get("uid_header"))
  if uid == nil then
    return
  end
  for attempt = 1, ATTEMPTS do
    local headers, body = handle:httpCall(CLUSTER, {
      [":method"] = "POST",
      [":path"] = PATH,
      [":authority"] = "stateful-route",
      [@SERVICE_HEADER@] = service,
      [@UID_HEADER@] = uid,
      [@GROUP_HEADER@] = GROUP,
      ["x-stateful-route-attempt"] = tostring(attempt),
    }, "", @TIMEOUT_MS@)
    local status = headers[":status"]
    if status == "400" or status == "429" then
      -- A bad uid, or a service that refuses new users past its limits (by its settings).
      handle:respond({[":status"] = status, ["content-type"] = "text/plain"}, body)
      return
    end
    if status ~= "200" then
      break -- the control plane cannot place the user now: Envoy balances the request
    end
    if select(handle, headers[KEY_HEADER]):get("pod") ~= nil then
      return
    end
    -- Envoy acknowledged the scope, but this worker thread has not applied it yet: ask again.
  end
  select(handle, FALLBACK_KEY)
end
