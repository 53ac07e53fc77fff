// @hey-api/openapi-ts configuration for the TypeScript client (run by generate.sh).
// Paths are resolved from this file so the generator works from any working directory.
import { fileURLToPath } from 'node:url';

const here = (relative) => fileURLToPath(new URL(relative, import.meta.url));

export default {
  input: here('../openapi.yaml'),
  output: {
    path: here('./generated/typescript'),
    // Consumers compile with `moduleResolution: nodenext`, where relative imports need an
    // explicit `.js`; pinning it here keeps the output independent of any tsconfig found nearby.
    module: { extension: '.js' },
    tsConfigPath: null,
  },
  // The Fetch API client: no runtime dependency, works on Node 20 and in browsers. The output is
  // ES modules (openapi/sdks/package.json says `"type": "module"`, which is also what makes tsc
  // compile the generated files as ES modules for the examples that import them).
  plugins: ['@hey-api/client-fetch', '@hey-api/typescript', '@hey-api/sdk'],
  // Errors go to the terminal (where generate.sh's callers read them), not to log files in the cwd.
  logs: { file: false },
};
