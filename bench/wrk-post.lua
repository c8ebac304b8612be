-- wrk script for bench/gateway.sh: every request is a POST of the JSON body in WRK_BODY
-- (the Authorization header comes from wrk's -H flag).
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
