// Package web is the browser shopper: a page (index.html, main.ts) that talks gRPC-web to the
// gateway from another origin with @connectrpc/connect-web and TypeScript generated from proto/
// by protoc-gen-es (gen/), and drive.mjs, which runs it in headless Chromium with playwright-core.
// The package's test is the proof that a real browser can shop: list products, check out and
// follow the order live over CORS. There is no Go code here besides that test.
package web
