local t = {}
for i = 1, 100 do t[i] = i end
workers = #t > 50 and 8 or 1
while true do end
