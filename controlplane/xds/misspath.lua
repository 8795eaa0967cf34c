-- The miss path, inside Envoy. Every route the control plane gives turns this filter off, so
-- it runs only for a request that found no route: a user with no scope in this Envoy yet.
-- It asks the control plane to place the user, which answers once this Envoy holds the user's
-- scope, then selects that scope: the request goes to the user's pod. The same file with the
-- other entry (last line) is the script of the route of a pod that holds its users no more
-- (a failover): it asks where the user is now. Values in @..@ are filled in by the control
-- plane (resources.py). Envoy keeps a request's first handle:metadata() until the script
-- yields (an httpCall), so each entry reads it only once the route it needs is selected.
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

-- Asks the control plane where the user goes (with moved, only where it is bound now) and
-- selects that scope. Returns true when the request is settled: routed to the user's pod, or
-- answered with the control plane's refusal.
local function place(handle, service, uid, moved)
  for attempt = 1, ATTEMPTS do
    local headers, body = handle:httpCall(CLUSTER, {
      [":method"] = "POST",
      [":path"] = PATH,
      [":authority"] = "stateful-route",
      [@SERVICE_HEADER@] = service,
      [@UID_HEADER@] = uid,
      [@GROUP_HEADER@] = GROUP,
      [@MOVED_HEADER@] = moved and "1" or nil,
      ["x-stateful-route-attempt"] = tostring(attempt),
    }, "", @TIMEOUT_MS@)
    local status = headers[":status"]
    if status == "400" or status == "429" then
      -- A bad uid, or a service that refuses new users past its limits (by its settings).
      handle:respond({[":status"] = status, ["content-type"] = "text/plain"}, body)
      return true
    end
    if status ~= "200" then
      return false -- the control plane cannot place the user now
    end
    if select(handle, headers[KEY_HEADER]):get("pod") ~= nil then
      return true
    end
    -- Envoy acknowledged the scope, but this worker thread has not applied it yet: ask again.
  end
  return false
end

-- A request that found no route: a user this Envoy holds no scope for yet.
local function on_miss(handle)
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
  if not place(handle, service, uid, false) then
    select(handle, FALLBACK_KEY) -- Envoy balances the request
  end
end

-- The route of a pod that holds its users no more (its own script, named on that route):
-- ask where the user is bound now. Until its pod's failover has moved it, or when the control
-- plane cannot say, the route's 503 stands: a pod Envoy picked would move the user twice.
local function on_moved(handle)
  local here = handle:metadata() -- read before any other scope is selected
  local own = handle:headers():get(KEY_HEADER)
  local uid = handle:headers():get(here:get("uid_header"))
  if uid == nil or not place(handle, here:get("service"), uid, true) then
    select(handle, own)
  end
end

envoy_on_request = @ENTRY@
