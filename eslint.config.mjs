import js from "@eslint/js"
import globals from "globals"
import tseslint from "typescript-eslint"

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "bench/results/", "test-output/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { ...globals.node }
    },
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      "no-constant-condition": ["error", { checkLoops: false }]
    }
  },
  { files: ["static/**/*.js", "test/browser/**/*.js"], languageOptions: { globals: { ...globals.browser } } },
  {
    // Domain code takes time from Effect's Clock so TestClock can drive it.
    files: ["src/**/*.ts"],
    rules: {
      "no-restricted-properties": ["error", { object: "Date", property: "now", message: "Use Clock.currentTimeMillis" }],
      "no-restricted-globals": ["error", { name: "setTimeout", message: "Use Effect.sleep" }, { name: "setInterval", message: "Use Schedule" }]
    }
  }
)
