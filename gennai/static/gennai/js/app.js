/*
 * Gennai — small site-wide behaviour. No build step; loaded with `defer` after htmx.
 *
 * CSRF: the CSRF token reaches htmx requests through `hx-headers` on <body>
 * (see gennai/templates/base.html), so nothing is needed here for that.
 *
 * Failed htmx requests are announced in #gn-error-region, using the
 * translated messages the server put on <body data-gn-error-*>.
 */
(function () {
  "use strict";

  function showError(message) {
    var region = document.getElementById("gn-error-region");
    if (!region || !message) {
      return;
    }
    var text = region.querySelector("[data-gn-error-text]");
    if (text) {
      text.textContent = message;
    }
    region.hidden = false;
  }

  function hideError() {
    var region = document.getElementById("gn-error-region");
    if (region) {
      region.hidden = true;
    }
  }

  // Bar widths come from data-gn-width="<percent>": the Content-Security-Policy
  // (style-src 'self') refuses inline style="" attributes, but not styles set here.
  function applyWidths(root) {
    if (!root || !root.querySelectorAll) {
      return;
    }
    var bars = root.querySelectorAll("[data-gn-width]");
    for (var i = 0; i < bars.length; i++) {
      var percent = parseFloat(bars[i].getAttribute("data-gn-width"));
      if (!isNaN(percent)) {
        bars[i].style.width = Math.max(0, Math.min(100, percent)) + "%";
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var body = document.body;
    applyWidths(document);
    body.addEventListener("htmx:load", function (event) {
      applyWidths(event.detail && event.detail.elt);
    });

    body.addEventListener("htmx:sendError", function () {
      showError(body.dataset.gnErrorNetwork);
    });

    body.addEventListener("htmx:responseError", function (event) {
      var status = event.detail && event.detail.xhr ? event.detail.xhr.status : 0;
      if (status === 401 || status === 403) {
        showError(body.dataset.gnErrorForbidden);
      } else if (status === 413) {
        showError(body.dataset.gnErrorTooLarge);
      } else {
        showError(body.dataset.gnErrorServer);
      }
    });

    body.addEventListener("htmx:beforeRequest", hideError);

    document.addEventListener("click", function (event) {
      var target = event.target;
      if (target instanceof Element && target.closest("[data-gn-error-dismiss]")) {
        hideError();
      }
    });
  });
})();
