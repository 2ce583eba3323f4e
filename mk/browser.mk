# Browser tier (tests/browser): Debian's Chromium, driven by Playwright's Python package
# (pinned in pyproject.toml). Playwright never downloads a browser here: the tests point it
# at /usr/bin/chromium, which this target installs from apt when it is missing.

TEST_PREREQS += browser-deps

.PHONY: browser-deps

browser-deps: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "browser-deps: installing Debian's chromium"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version
