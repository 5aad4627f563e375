/*
 * Gennai chat: small behaviour on top of htmx + htmx-ext-sse. No build step.
 *
 * - 422 responses (validation errors), 409 (another answer of the conversation
 *   is still pending) and 429 (a budget used up; for 409 and 429 the server
 *   retargets the message to the composer's error slot) are swapped like
 *   successes, without the generic error banner of app.js.
 * - After a message is sent: clear the composer, keep focus in it and bring
 *   the new answer into view.
 * - Ctrl+Enter (⌘+Enter) sends from any textarea marked data-gn-submit-on-ctrl-enter.
 * - While an answer streams, keep it in view if the reader is already at the bottom.
 */
(function () {
  "use strict";

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 160;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail && event.detail.xhr;
    if (xhr && (xhr.status === 409 || xhr.status === 422 || xhr.status === 429)) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail && event.detail.elt;
    var xhr = event.detail && event.detail.xhr;
    if (!form || form.id !== "composer" || !xhr) {
      return;
    }
    var input = form.querySelector("textarea");
    if (xhr.status === 200 && input) {
      input.value = "";
      var last = document.querySelector("#messages > article:last-of-type");
      if (last) {
        last.scrollIntoView({ block: "nearest" });
      }
    }
    if (input) {
      input.focus();
    }
  });

  var stick = false;
  document.addEventListener("htmx:sseBeforeMessage", function () {
    stick = nearBottom();
  });
  document.addEventListener("htmx:sseMessage", function () {
    if (stick) {
      window.scrollTo({ top: document.body.scrollHeight });
    }
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (
      event.key === "Enter" &&
      (event.ctrlKey || event.metaKey) &&
      target instanceof HTMLTextAreaElement &&
      target.hasAttribute("data-gn-submit-on-ctrl-enter") &&
      target.form
    ) {
      event.preventDefault();
      target.form.requestSubmit();
    }
  });
})();
