// TT Portal: the VM page's live console (vms/consumers.py speaks the other end).
// xterm.js draws the terminal; the websocket carries keystrokes in and output out as bytes,
// and JSON text messages for who types (status), refusals and the end.
(function () {
  "use strict";
  var panel = document.getElementById("live-console");
  if (!panel || !window.Terminal) return;
  var box = document.getElementById("terminal"), state = document.getElementById("console-state"),
      note = document.getElementById("console-note"), openBtn = document.getElementById("console-open"),
      takeBtn = document.getElementById("console-take"), closeBtn = document.getElementById("console-close");
  var term = null, fit = null, ws = null, encoder = new TextEncoder();

  function say(text) { note.textContent = text || ""; }

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(message);
  }

  function handle(message) {
    if (message.type === "status") {
      var mine = message.role === "writer";
      state.textContent = mine ? "you are typing" : (message.writer ? "watching: " + message.writer + " is typing" : "watching: nobody is typing");
      if (message.viewers > 1) state.textContent += " · " + message.viewers + " viewers";
      takeBtn.hidden = mine || panel.dataset.mayType === "0";
      panel.dataset.role = message.role;
    } else if (message.type === "refused") {
      say(message.message);
    } else if (message.type === "ended" || message.type === "error") {
      say(message.message);
    }
  }

  function open() {
    say("");
    openBtn.hidden = true;
    box.hidden = false;
    if (!term) {
      term = new window.Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
      fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
      term.open(box);
      term.onData(function (data) { send(encoder.encode(data)); });
      term.onResize(function (size) { send(JSON.stringify({ type: "resize", cols: size.cols, rows: size.rows })); });
      window.addEventListener("resize", function () { fit.fit(); });
    }
    fit.fit();
    term.focus();
    state.textContent = "connecting…";
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + panel.dataset.wsPath);
    ws.binaryType = "arraybuffer";
    ws.onopen = function () {
      closeBtn.hidden = false;
      send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
    };
    ws.onmessage = function (event) {
      if (typeof event.data === "string") handle(JSON.parse(event.data));
      else term.write(new Uint8Array(event.data));
    };
    ws.onclose = function (event) {
      ws = null;
      state.textContent = "closed";
      panel.dataset.role = "";
      takeBtn.hidden = closeBtn.hidden = true;
      openBtn.hidden = false;
      openBtn.textContent = "Reopen console";
      if (!note.textContent) say(event.code === 1006 ? "The connection was refused or lost." : "Closed.");
    };
  }

  openBtn.addEventListener("click", open);
  takeBtn.addEventListener("click", function () { send(JSON.stringify({ type: "take" })); term.focus(); });
  closeBtn.addEventListener("click", function () { if (ws) ws.close(1000); });
})();
