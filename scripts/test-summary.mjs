// Prints vitest's JSON report as one closing line, "tests: N passed, N failed, N skipped", which CI reads.
// A file that failed outside its tests (in a hook, say) counts as one failure: vitest marks its tests
// skipped, and a closing line of "0 failed" would hide it.
// Under CI (CI set) a skipped test fails the run: the tests skipped on a kernel that has ipvlan prove the
// handling of one that lacks it, and CI's machines are the ones that must run them.
import { readFileSync } from "node:fs";

const report = JSON.parse(readFileSync(process.argv[2], "utf8"));
const filesFailedOutsideTests = report.testResults.filter(
  (file) => file.status === "failed" && !file.assertionResults.some((test) => test.status === "failed"),
).length;
const failed = report.numFailedTests + filesFailedOutsideTests;
const skipped = report.numPendingTests + report.numTodoTests;
console.log(`tests: ${report.numPassedTests} passed, ${failed} failed, ${skipped} skipped`);
if (process.env.CI && skipped > 0) {
  const names = report.testResults.flatMap((file) =>
    file.assertionResults.filter((test) => test.status === "pending" || test.status === "skipped" || test.status === "todo").map((test) => `${file.name}: ${test.fullName}`),
  );
  console.error(`failed: CI skipped ${skipped} tests, which then prove nothing:\n${names.join("\n")}`);
  process.exit(1);
}
