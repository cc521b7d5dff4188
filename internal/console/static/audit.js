// audit.js runs the in-browser proof check of an audit entry page: the
// data the server embedded (#proof-data) is checked by verify.js, and the
// page says what the browser itself found. "Check again" re-reads the data,
// so a reader can see a changed byte fail.
import { shownText, verifyInclusion } from "./verify.js";

async function check() {
  const status = document.getElementById("proof-status");
  const shown = document.getElementById("entry-verified");
  status.className = "status pending";
  status.textContent = "Checking in this browser\u2026";
  shown.textContent = "";
  let data;
  try {
    data = JSON.parse(document.getElementById("proof-data").textContent);
  } catch {
    data = null;
  }
  const res = await verifyInclusion(data);
  if (res.ok) {
    status.className = "status verified";
    status.textContent = "Verified in this browser: entry " + data.index + " is in the log of " + res.size +
      " entries whose checkpoint is signed by " + String(data.key).split("+")[0] + ".";
    shown.textContent = shownText(res.entry);
  } else {
    status.className = "status failed";
    status.textContent = "Verification FAILED: " + res.reason;
  }
  status.dataset.result = res.ok ? "verified" : "failed";
}

document.getElementById("recheck")?.addEventListener("click", check);
check();
