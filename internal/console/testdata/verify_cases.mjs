// Runs static/verify.js on each case of the JSON file named by argv[2] and
// prints one line per case: its name and "ok" or "fail: reason".
import { readFileSync } from "node:fs";
import { verifyInclusion } from "../static/verify.js";

const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
for (const c of cases) {
  const res = await verifyInclusion(c.data);
  console.log(c.name + "\t" + (res.ok ? "ok" : "fail: " + res.reason));
}
