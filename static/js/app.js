// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Fallback for plain-http hosts other than localhost.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    try {
      document.execCommand("copy");
    } finally {
      document.body.removeChild(area);
    }
    return Promise.resolve();
  }

  // Enter in a service picker's search searches; it does not submit the form around it
  // with a half-made choice.
  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && event.target.matches(".service-picker input[type=search]")) {
      event.preventDefault();
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy");
    if (!button) return;
    var source = document.querySelector(button.dataset.copy);
    if (!source) return;
    copyText(source.textContent.trim()).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () {
        button.textContent = label;
        button.classList.remove("copied");
      }, 1500);
    });
  });

  // In the service form, databases always use their standard port.
  function syncPorts(select) {
    var defaults = JSON.parse(select.dataset.defaultPorts || "{}");
    var ports = document.getElementById("id_ports");
    if (!ports) return;
    var standard = defaults[select.value];
    var isDatabase = select.dataset.databaseKinds.split(",").indexOf(select.value) !== -1;
    if (isDatabase) {
      ports.value = standard;
      ports.readOnly = true;
    } else {
      if (ports.readOnly) ports.value = standard || "";
      ports.readOnly = false;
    }
  }

  // Keep "applied 12 s ago" true while the page stays open.
  function refreshRelativeTimes() {
    document.querySelectorAll("time[data-relative]").forEach(function (node) {
      var seconds = Math.round((Date.now() - Date.parse(node.getAttribute("datetime"))) / 1000);
      if (isNaN(seconds)) return;
      if (seconds < 1) node.textContent = "just now";
      else if (seconds < 60) node.textContent = seconds + " s ago";
      else if (seconds < 3600) node.textContent = Math.floor(seconds / 60) + " min ago";
    });
  }
  setInterval(refreshRelativeTimes, 5000);

  // A hidden tab does not poll. htmx's own trigger filters ("every 2s [...]") would need eval,
  // which the CSP forbids, so the poll is dropped here; the next tick after the tab shows again
  // asks for the current state. A poll is the one request htmx sends without a triggering event.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var polled = !event.detail.requestConfig.triggeringEvent &&
      /(^|[\s,])every\s/.test(event.detail.elt.getAttribute("hx-trigger") || "");
    if (polled && document.visibilityState === "hidden") event.preventDefault();
  });
  // Back in view: ask at once what changed while hidden (the poll listens for page-visible).
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      document.dispatchEvent(new CustomEvent("page-visible"));
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-default-ports]")) syncPorts(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () {
    var select = document.querySelector("select[data-default-ports]:not([disabled])");
    if (select) syncPorts(select);
  });
})();
