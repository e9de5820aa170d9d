# planter — every developer and CI task. `make help` lists them.
SHELL := /bin/bash
# bun from npm goes to ~/.local when npm's global prefix is not yours to write (deps): find it there.
# The PATH you called make with: install tells you when its bin dir is not on it.
export PLANTER_CALLER_PATH := $(PATH)
export PATH := $(HOME)/.local/bin:$(PATH)
VERSION := $(shell bun -e 'console.log(require("./package.json").version)' 2>/dev/null || node -p 'require("./package.json").version')
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
ENTRIES := planterd logs sandbox doctor install uninstall migrate
TARGETS := linux-x64 linux-arm64 darwin-arm64 darwin-x64

.PHONY: help deps build dist install up test test-slow test-all lint fmt typecheck preflight openapi bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

deps: ## install bun (from npm) when missing, then the locked dependencies
	@command -v bun >/dev/null || { \
	  root=$$(npm root -g); [ -d "$$root" ] || root=$$(dirname "$$root"); \
	  if [ -w "$$root" ]; then npm install -g bun; \
	  else echo "npm's global prefix is not writable: installing bun into ~/.local"; npm install -g --prefix "$$HOME/.local" bun; fi; }
	@bun install --frozen-lockfile

build: deps ## host binary dist/planter and its entry links
	@mkdir -p dist
	.ci/compile dist/planter "$(COMMIT)"
	@for e in $(ENTRIES); do ln -sf planter dist/$$e; done

dist: deps ## release tarballs for every target, with SHA256SUMS
	@bash .ci/dist "$(VERSION)" "$(COMMIT)" $(TARGETS)

install: build ## install planter on this host (user mode; system mode as root), start planterd, run a first job
	@bash .ci/up

up: install ## the same as install

test: deps ## the fast lane (test/unit, test/integration, test/e2e); ends with "N passed, N failed"
	@bash .ci/test fast

test-slow: deps ## the slow lane (test/slow: release tarball, seeded fuzz, crash storm, vm jobs in real guests, cgroup v2 in a guest)
	@bash .ci/test slow

test-all: deps ## both lanes in one run, as CI runs them
	@bash .ci/test all

lint: deps ## biome lint and format check
	bunx biome check .

fmt: deps ## format and fix what biome can
	bunx biome check --write .

typecheck: deps ## tsc --noEmit
	bunx tsc --noEmit -p .

preflight: lint typecheck test-all ## everything CI checks

openapi: deps ## write docs/openapi.json and the route table of docs/api.md from lib/api/routes.ts
	bun lib/api/openapi.ts

bench: build ## benchmarks; figures go to plans/benchmarks.md by hand
	bun bench/run.ts

clean: ## remove build output
	rm -rf dist .bench
