// node validate.mjs FILE: parses FILE with @asyncapi/parser; prints its diagnostics as JSON lines
// and exits 1 if any is an error (severity 0), 0 otherwise.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"));
for (const diagnostic of diagnostics) {
  console.log(JSON.stringify({ severity: diagnostic.severity, code: diagnostic.code,
                               message: diagnostic.message, path: diagnostic.path }));
}
const errors = diagnostics.filter((diagnostic) => diagnostic.severity === 0);
if (!document || errors.length) process.exit(1);
console.log(JSON.stringify({ ok: true, channels: document.channels().length,
                             operations: document.operations().length,
                             messages: document.messages().length }));
