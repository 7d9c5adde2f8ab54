local s = "xxxxxxxx"
for i = 1, 19 do s = s .. s end
local t = "xxxxxxxx"
for i = 1, 19 do t = t .. t end
while true do local a = s == t end
