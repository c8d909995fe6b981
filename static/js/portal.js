// TT Portal: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  function fmt(seconds) {
    if (seconds <= 0) return "0 s";
    var d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600),
        m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (d) return d + " d " + h + " h";
    if (h) return h + " h " + m + " m";
    if (m) return m + " m " + s + " s";
    return s + " s";
  }

  // Time left: [data-end] holds the Env's end (ISO 8601); in its last hour it becomes a warning.
  function tickCountdowns() {
    var now = Date.now();
    document.querySelectorAll("[data-end]").forEach(function (el) {
      var left = Math.max(0, Math.floor((Date.parse(el.dataset.end) - now) / 1000));
      el.textContent = left > 0 ? fmt(left) : "expired";
      el.classList.toggle("warn", left < Number(el.dataset.warn || 3600));
    });
  }

  // Management cooldown: buttons with [data-cooldown] are enabled when it reaches zero;
  // any other element with it (a note) goes away then.
  function startCooldowns(root) {
    var started = Date.now();
    (root || document).querySelectorAll("[data-cooldown]").forEach(function (btn) {
      if (btn.dataset.ticking) return;
      btn.dataset.ticking = "1";
      var total = Number(btn.dataset.cooldown), span = btn.querySelector(".cooldown");
      var timer = setInterval(function () {
        var left = total - Math.floor((Date.now() - started) / 1000);
        if (left <= 0) {
          clearInterval(timer);
          if (btn.tagName !== "BUTTON") { btn.remove(); return; }
          btn.disabled = false;
          btn.removeAttribute("title");
          if (span) span.remove();
        } else if (span) {
          span.textContent = "available in " + left + " s";
        }
      }, 1000);
    });
  }

  // Copy buttons: hidden without JavaScript (the text itself can be selected). A button
  // copies its data-copy, or else the .copy-src beside it (long tables skip the repeat).
  function enableCopy(root) {
    (root || document).querySelectorAll("button.copy").forEach(function (btn) {
      if (!navigator.clipboard) return;
      btn.hidden = false;
      if (btn.dataset.bound) return;
      btn.dataset.bound = "1";
      btn.addEventListener("click", function () {
        var source = btn.parentElement.querySelector(".copy-src");
        var text = btn.dataset.copy || (source && source.textContent.trim());
        navigator.clipboard.writeText(text).then(function () {
          var label = btn.textContent;
          btn.textContent = "Copied";
          setTimeout(function () { btn.textContent = label; }, 1200);
        });
      });
    });
  }

  // New VM rows: choosing a template fills the row's ports with the template's default
  // ones (its option's data-ports), unless the user has typed ports of their own.
  function offerDefaultPorts(root) {
    (root || document).querySelectorAll("select[name$='template']").forEach(function (select) {
      if (select.dataset.portsBound) return;
      var scope = select.closest("tr") || select.form;
      var ports = scope && scope.querySelector("input[name$='ports']");
      if (!ports) return;
      select.dataset.portsBound = "1";
      var offered = "";
      select.addEventListener("change", function () {
        var option = select.options[select.selectedIndex];
        var wanted = (option && option.dataset.ports) || "";
        if (ports.value.trim() === "" || ports.value === offered) ports.value = wanted;
        offered = wanted;
      });
    });
  }

  function init(root) {
    startCooldowns(root);
    enableCopy(root);
    offerDefaultPorts(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
    init(document);
  });
  // Parts swapped in by htmx get the same treatment.
  document.addEventListener("htmx:load", function (evt) { init(evt.target); });
})();
