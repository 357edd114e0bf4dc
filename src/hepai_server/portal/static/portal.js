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
