-- wrk script: POST one new payment per request, with a fresh Idempotency-Key
-- (sent to the plain route too, where nothing reads it), so that every request
-- of the idempotent route takes the claim path, not the replay path.
local counter = 0
local prefix

function setup(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end

function init(args)
  prefix = tid .. "-" .. tostring(os.time())
end

function request()
  counter = counter + 1
  local key = prefix .. "-" .. counter
  return wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = '"' .. key .. '"',
  }, '{"ref": "' .. key .. '", "amount": 1}')
end
