-- wrk script for keyraft's HTTP verify benchmark: every request is
-- GET /v1/verify with X-API-Key set to a key drawn at random from the file
-- given after "--" (one token a line; benchrun writes 90% keys imported into
-- the node and 10% well-formed keys that were never imported).
--
--   wrk -t1 -c32 -d10s -s bench/wrk/verify.lua http://127.0.0.1:8080 -- keys.txt
local keys = {}

function init(args)
  for line in io.lines(args[1]) do
    keys[#keys + 1] = line
  end
  math.randomseed(os.time())
end

function request()
  return wrk.format("GET", "/v1/verify", { ["X-API-Key"] = keys[math.random(#keys)] })
end
