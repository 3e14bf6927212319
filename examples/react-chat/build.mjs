// Bundles src/ into public/app.js with esbuild. `--serve` also serves public/ on PORT
// (default 5173) and rebuilds on every request, like a Vite dev server.
//
//   AGENTS_SERVER  the Django server the page connects to by default (http://127.0.0.1:8000);
//                  the page's connect form can change it.
import * as esbuild from "esbuild";

const options = {
  entryPoints: ["src/main.jsx"],
  bundle: true,
  outfile: "public/app.js",
  format: "esm",
  jsx: "automatic",
  target: "es2022",
  minify: !process.argv.includes("--serve"),
  sourcemap: true,
  logLevel: "info",
  define: {
    "process.env.NODE_ENV": JSON.stringify(process.argv.includes("--serve") ? "development" : "production"),
    AGENTS_SERVER: JSON.stringify(process.env.AGENTS_SERVER || "http://127.0.0.1:8000"),
  },
};

if (process.argv.includes("--serve")) {
  const context = await esbuild.context(options);
  const port = Number(process.env.PORT || 5173);
  const { hosts } = await context.serve({ servedir: "public", port, host: process.env.HOST || "localhost" });
  console.log(`React chat example: http://localhost:${port}/ (serving on ${hosts.join(", ")})`);
} else {
  await esbuild.build(options);
}
