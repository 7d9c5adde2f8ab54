-- working_hours -- follow moves only when the new time is bookable.
--
-- A host who drags an event to 7 a.m. or to a Saturday probably did not
-- mean to offer that slot: the booking is flagged for review instead.
--
--   on_delete        cancel
--   on_time_change   reschedule when the new start and end fall inside the
--                    working hours of one working day; flag otherwise
--   on_title_change  ignore
--   on_past          ignore
--
-- ctx.settings (all optional):
--   work_start   "HH:MM", default "09:00": start of the working day
--   work_end     "HH:MM", default "17:00": end of the working day
--   work_days    ISO weekdays (1 = Monday .. 7 = Sunday), "1,2,3,4,5" by
--                default (a list {1, 2, 3, 4, 5} stored before the schema
--                is still read)
--   zone         IANA time zone of the host ("Europe/Berlin"): the hours
--                are wall-clock hours there, daylight-saving changes
--                included (calsync.localtime)
--   utc_offset   "+HH:MM" or minutes east of UTC, default "+00:00": a
--                fixed offset, used only when zone is not set
local calsync = require "calsync"

local function minutes(hhmm, name)
  local h, m = string.match(hhmm, "^(%d%d?):(%d%d)$")
  if not h or tonumber(h) > 24 or tonumber(m) > 59 then
    error("settings." .. name .. " must be \"HH:MM\", got " .. tostring(hhmm))
  end
  return tonumber(h) * 60 + tonumber(m)
end

local function hours(settings)
  local from = minutes(settings.work_start or "09:00", "work_start")
  local to = minutes(settings.work_end or "17:00", "work_end")
  local days = {}
  local wd = settings.work_days or "1,2,3,4,5"
  if type(wd) == "string" then
    for d in string.gmatch(wd, "[^,%s]+") do
      local n = tonumber(d)
      if not n or n < 1 or n > 7 or n % 1 ~= 0 then
        error("settings.work_days must list weekdays 1-7, got " .. wd)
      end
      days[n] = true
    end
  else
    for _, d in ipairs(wd) do days[d] = true end
  end
  return from, to, days
end

-- The wall clock of t where the host works; wday 1 = Monday .. 7 = Sunday.
local function wall(t, settings)
  if settings.zone ~= nil then
    local c = calsync.localtime(t, settings.zone)
    return { year = c.year, yday = c.yday, hour = c.hour, min = c.min,
             wday = (c.wday + 5) % 7 + 1 } -- localtime's wday: 1 = Sunday
  end
  return calsync.clock(t, calsync.offset(settings.utc_offset))
end

-- true when [start, end) lies inside one working day's hours.
local function inside(span, settings)
  local from, to, days = hours(settings)
  local s, e = calsync.time(span.start), calsync.time(span["end"])
  local cs, ce = wall(s, settings), wall(e - 1, settings)
  if cs.year ~= ce.year or cs.yday ~= ce.yday then return false end
  if not days[cs.wday] then return false end
  local sm = cs.hour * 60 + cs.min
  local em = (e - s) / 60 + sm
  return sm >= from and em <= to
end

return {
  settings = {
    work_start = { type = "string", default = "09:00" },
    work_end = { type = "string", default = "17:00" },
    work_days = { type = "string", default = "1,2,3,4,5" },
    zone = { type = "string" },
    utc_offset = { type = "string" },
  },

  on_delete = function()
    return { action = "cancel", reason = "event deleted in Google Calendar" }
  end,

  on_time_change = function(change, booking, ctx)
    if inside(change.new, ctx.settings) then
      return { action = "reschedule", reason = "event moved to " .. change.new.start }
    end
    return { action = "flag",
             reason = "event moved to " .. change.new.start
               .. ", outside working hours: review before rescheduling" }
  end,

  on_title_change = function()
    return { action = "ignore", reason = "title changes are not synced to bookings" }
  end,

  on_past = function()
    return { action = "ignore", reason = "booking is in the past" }
  end,
}
