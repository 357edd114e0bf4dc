// The portal's only script: copy buttons and confirmations. Pages work without it.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = "value" in source && source.value !== undefined ? source.value : source.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard access (an insecure origin, or denied): select it for Ctrl+C instead.
    if (source.select) source.select();
    return;
  }
  const label = button.textContent;
  button.textContent = button.dataset.copied || label;
  button.setAttribute("aria-live", "polite");
  setTimeout(() => { button.textContent = label; }, 2000);
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// Uploads show their progress; without this script the form posts the file all the same.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.matches("[data-upload]") || event.defaultPrevented) return;
  event.preventDefault();
  const progress = form.querySelector("progress");
  const status = form.querySelector("output");
  const request = new XMLHttpRequest();
  request.open("POST", form.action);
  request.upload.addEventListener("progress", (step) => {
    if (!step.lengthComputable) return;
    progress.hidden = false;
    progress.value = Math.round((step.loaded / step.total) * 100);
    status.textContent = progress.value + "%";
  });
  request.addEventListener("load", () => {
    if (request.status < 400) {
      window.location.assign(request.responseURL || form.action);
      return;
    }
    const page = new DOMParser().parseFromString(request.responseText, "text/html");
    const reason = page.querySelector("[role=alert]");
    status.textContent = status.dataset.failed + " " + (reason ? reason.textContent : request.status);
  });
  request.addEventListener("error", () => { status.textContent = status.dataset.failed; });
  request.send(new FormData(form));
});
