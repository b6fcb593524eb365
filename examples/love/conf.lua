-- LÖVE 11 configuration for the imm example: a small window, and no audio
-- (the example plays nothing, and a headless run has no sound card).
function love.conf(t)
  t.identity = "imm-example"
  t.version = "11.0"
  t.window.title = "imm: bindings"
  t.window.width, t.window.height = 640, 360
  t.window.vsync = 0
  t.modules.audio = false
  t.modules.sound = false
  t.modules.joystick = false
  t.modules.physics = false
end
