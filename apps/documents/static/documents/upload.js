// Drag and drop onto the upload form (progressive enhancement: the plain
// <input type="file" multiple> works without this file). No inline script: CSP.
(function () {
  "use strict";
  function setup(zone) {
    var input = zone.querySelector("input[type=file]");
    if (!input) return;
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("gn-dropzone-active");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () {
        zone.classList.remove("gn-dropzone-active");
      });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      if (zone.requestSubmit) zone.requestSubmit();
      else zone.submit();
    });
    // After an HTMX upload, clear the selection for the next files.
    zone.addEventListener("htmx:afterRequest", function () {
      zone.reset();
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form.gn-dropzone").forEach(setup);
  });
})();
