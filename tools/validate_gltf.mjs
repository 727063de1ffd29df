// Validate one glTF/GLB with the Khronos glTF validator (npm `gltf-validator`).
// Reads the asset's bytes from stdin and writes one JSON object to stdout:
//   {"report": <the validator's report>}   when the validator ran, or
//   {"rejected": "<message>"}              when it could not even parse the container.
// orbitforge/validate.py calls this through node; `npm ci --prefix tools` installs the package.
import { validateBytes } from 'gltf-validator';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const data = new Uint8Array(Buffer.concat(chunks));

try {
  // maxIssues 0 = no limit, so the counts are exact
  const report = await validateBytes(data, { maxIssues: 0, writeTimestamp: false });
  process.stdout.write(JSON.stringify({ report }));
} catch (error) {
  process.stdout.write(JSON.stringify({ rejected: String(error) }));
}
