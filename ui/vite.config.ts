import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The built files are committed under dist/ and embedded into the odigos binary; CI rebuilds
// them and fails when they differ, so the build must be reproducible.
export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
});
