// Prints vitest's JSON report as one closing line, "tests: N passed, N failed, N skipped", which CI reads.
// A file that failed outside its tests (in a hook, say) counts as one failure: vitest marks its tests
// skipped, and a closing line of "0 failed" would hide it.
import { readFileSync } from "node:fs";

const report = JSON.parse(readFileSync(process.argv[2], "utf8"));
const filesFailedOutsideTests = report.testResults.filter(
  (file) => file.status === "failed" && !file.assertionResults.some((test) => test.status === "failed"),
).length;
const failed = report.numFailedTests + filesFailedOutsideTests;
const skipped = report.numPendingTests + report.numTodoTests;
console.log(`tests: ${report.numPassedTests} passed, ${failed} failed, ${skipped} skipped`);
