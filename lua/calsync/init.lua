-- The calsync module offered to policies: `local calsync = require "calsync"`
-- (it is also preloaded: policies may use the global `calsync`).
--
-- Bundled into the binary (tools/bundle.c) and run in a restricted
-- environment built by calsync.sandbox, so it sees the same library as a
-- policy. Everything here is pure Lua and deterministic, so busted specs and
-- the service compute the same answers (localtime, the one C function, is
-- deterministic too: the zone file is its only input).
--
--   calsync.time(s)          RFC 3339 text or "YYYY-MM-DD" -> epoch seconds
--   calsync.format(t)        epoch seconds -> "YYYY-MM-DDTHH:MM:SSZ"
--   calsync.clock(t, off)    epoch seconds (+ offset minutes) -> wall clock
--                            {year, month, day, hour, min, sec, wday, yday}
--                            wday: 1 = Monday .. 7 = Sunday (ISO 8601)
--   calsync.offset(v)        "+01:00" / "-0530" / "Z" / minutes -> minutes
--   calsync.localtime(t, zone)  epoch seconds -> wall clock in an IANA zone
--                            {year, month, day, hour, min, sec, wday, yday,
--                            utc_offset, isdst}, wday 1 = Sunday (os.date);
--                            C, added by src/policy/sandbox.c (tz.c reads
--                            the system's zoneinfo)
--   calsync.MINUTE, HOUR, DAY
local M = {}

-- Captured once: the functions below must not see later global changes.
local sfind, ssub, tonumber, type, floor, error, tostring, sformat =
    string.find, string.sub, tonumber, type, math.floor, error, tostring,
    string.format

M.MINUTE = 60
M.HOUR = 3600
M.DAY = 86400

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
-- days_from_civil): exact for every year, no os.time/timezone involved.
local function days_from_civil(y, m, d)
    if m <= 2 then y = y - 1 end
    local era = floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

local function civil_from_days(z)
    z = z + 719468
    local era = floor(z / 146097)
    local doe = z - era * 146097
    local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524)
        - floor(doe / 146096)) / 365)
    local y = yoe + era * 400
    local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
    local mp = floor((5 * doy + 2) / 153)
    local d = doy - floor((153 * mp + 2) / 5) + 1
    local m = mp < 10 and mp + 3 or mp - 9
    if m <= 2 then y = y + 1 end
    return y, m, d
end

local mdays = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

local function valid_date(y, mo, d)
    if mo < 1 or mo > 12 or d < 1 or d > mdays[mo] then return false end
    if mo == 2 and d == 29 then
        return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
    end
    return true
end

--- Epoch seconds of an RFC 3339 date-time ("2026-11-24T09:00:00Z",
--- "2026-11-24T10:00:00.5+01:00") or an all-day date ("2026-11-24",
--- midnight UTC). Fractional seconds give a float. Errors on anything else.
function M.time(s)
    if type(s) ~= "string" then
        error("calsync.time: expected an RFC 3339 string, got " .. type(s), 2)
    end
    local _, e, y, mo, d = sfind(s, "^(%d%d%d%d)%-(%d%d)%-(%d%d)")
    if not e then
        error("calsync.time: not an RFC 3339 time: " .. tostring(s), 2)
    end
    y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
    if not valid_date(y, mo, d) then
        error("calsync.time: invalid date: " .. s, 2)
    end
    local days = days_from_civil(y, mo, d)
    if e == #s then
        return days * 86400
    end
    local _, e2, h, mi, se = sfind(s, "^[Tt ](%d%d):(%d%d):(%d%d)", e + 1)
    if not e2 then
        error("calsync.time: not an RFC 3339 time: " .. s, 2)
    end
    h, mi, se = tonumber(h), tonumber(mi), tonumber(se)
    if h > 23 or mi > 59 or se > 60 then
        error("calsync.time: invalid time of day: " .. s, 2)
    end
    local pos = e2 + 1
    local frac = 0
    local _, e3, digits = sfind(s, "^%.(%d+)", pos)
    if e3 then
        frac = tonumber("0." .. digits)
        pos = e3 + 1
    end
    local off = 0
    local zone = ssub(s, pos)
    if zone == "Z" or zone == "z" then
        off = 0
    else
        local _, _, sign, oh, om = sfind(zone, "^([+-])(%d%d):(%d%d)$")
        if not sign then
            error("calsync.time: missing or bad UTC offset: " .. s, 2)
        end
        off = (tonumber(oh) * 60 + tonumber(om)) * 60
        if sign == "-" then off = -off end
    end
    local t = days * 86400 + h * 3600 + mi * 60 + se - off
    if frac ~= 0 then return t + frac end
    return t
end

--- "YYYY-MM-DDTHH:MM:SSZ" (UTC) of epoch seconds (fractions dropped).
function M.format(t)
    if type(t) ~= "number" then
        error("calsync.format: expected epoch seconds, got " .. type(t), 2)
    end
    t = floor(t)
    local days = floor(t / 86400)
    local rem = t - days * 86400
    local y, m, d = civil_from_days(days)
    return sformat("%04d-%02d-%02dT%02d:%02d:%02dZ", y, m, d,
        floor(rem / 3600), floor(rem % 3600 / 60), rem % 60)
end

--- Minutes east of UTC from "+01:00", "-0530", "Z" or a number of minutes.
function M.offset(v)
    if v == nil or v == "Z" or v == "z" then return 0 end
    if type(v) == "number" then return v end
    if type(v) ~= "string" then
        error("calsync.offset: expected \"+HH:MM\" or minutes, got " .. type(v), 2)
    end
    local _, _, sign, h, m = sfind(v, "^([+-])(%d%d):?(%d%d)$")
    if not sign then error("calsync.offset: bad UTC offset: " .. v, 2) end
    local mins = tonumber(h) * 60 + tonumber(m)
    return sign == "-" and -mins or mins
end

--- Wall clock of epoch seconds t shifted by `offset` minutes (default 0):
--- {year, month, day, hour, min, sec, wday (1 = Monday .. 7 = Sunday), yday}.
function M.clock(t, offset)
    if type(t) ~= "number" then
        error("calsync.clock: expected epoch seconds, got " .. type(t), 2)
    end
    t = floor(t) + M.offset(offset) * 60
    local days = floor(t / 86400)
    local rem = t - days * 86400
    local y, m, d = civil_from_days(days)
    return {
        year = y, month = m, day = d,
        hour = floor(rem / 3600), min = floor(rem % 3600 / 60), sec = rem % 60,
        wday = (days + 3) % 7 + 1, -- 1970-01-01 was a Thursday (4)
        yday = days - days_from_civil(y, 1, 1) + 1,
    }
end

return M
