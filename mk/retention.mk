# Retention tier: versitygw, a real S3 server (Apache-2.0) that enforces checksums, Object
# Lock and legal holds, built from the Go module proxy (~2.5 min the first time) and cached.
# A failed build fails `make test`, with the build log's tail: the Object Lock tests need it.

VERSITYGW_VERSION ?= v1.8.0
VERSITYGW_DIR     ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/starkmatter/versitygw-$(VERSITYGW_VERSION)

TEST_PREREQS += versitygw

.PHONY: versitygw

versitygw:
	@test -x $(VERSITYGW_DIR)/versitygw || { \
	  mkdir -p $(VERSITYGW_DIR); \
	  echo "versitygw: building $(VERSITYGW_VERSION) with go install (cached in $(VERSITYGW_DIR))"; \
	  GOBIN=$(VERSITYGW_DIR) GOFLAGS=-trimpath go install -ldflags='-s -w' \
	    github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION) \
	    > $(VERSITYGW_DIR)/build.log 2>&1 || { tail -20 $(VERSITYGW_DIR)/build.log; exit 1; }; }
