-- all_declined -- a booking nobody will attend needs a human.
--
-- When every attendee of the booking's event has declined it in Google
-- Calendar, the booking is flagged for review (the app decides: cancel,
-- rebook, ask the host). Everything else is as the default policy.
--
--   on_response      flag when the event has attendees and all of them
--                    declined; else ignore (an acceptance, a tentative,
--                    one decline among several)
--   on_delete        cancel
--   on_time_change   reschedule
--   on_title_change  ignore
--   on_past          ignore
--
-- change.new.attendees lists {email, response}; response is one of
-- "accepted", "declined", "tentative", "needsAction" (DESIGN §5).
return {
  settings = {},

  on_response = function(change)
    local attendees = change.new and change.new.attendees
    if attendees == nil or #attendees == 0 then
      return { action = "ignore", reason = "no attendees" }
    end
    for i = 1, #attendees do
      if attendees[i].response ~= "declined" then
        return { action = "ignore", reason = "not every attendee declined" }
      end
    end
    return { action = "flag",
             reason = "all " .. #attendees .. " attendee(s) declined in Google Calendar" }
  end,

  on_delete = function()
    return { action = "cancel", reason = "event deleted in Google Calendar" }
  end,

  on_time_change = function(change)
    return { action = "reschedule",
             reason = "event moved to " .. change.new.start .. " in Google Calendar" }
  end,

  on_title_change = function()
    return { action = "ignore", reason = "title changes are not synced to bookings" }
  end,

  on_past = function()
    return { action = "ignore", reason = "booking is in the past" }
  end,
}
