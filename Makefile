# stormweir developer targets.
CONTROLLER_GEN ?= go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
API_PKG := ./pkg/apis/...
CHART_CRDS := deploy/helm/stormweir/crds
GENERATED := pkg/apis/stormweir/v1alpha1/zz_generated.deepcopy.go pkg/apis/stormweir/v1alpha1/applyconfiguration deploy/crd $(CHART_CRDS)

.PHONY: generate verify-generated testbins test bench lint

## generate: deepcopy functions, typed apply configurations (v1alpha1/applyconfiguration) and the CRD YAML (deploy/crd, and the Helm chart's crds/) from the API types.
generate:
	$(CONTROLLER_GEN) object paths="$(API_PKG)"
	rm -rf pkg/apis/stormweir/v1alpha1/applyconfiguration
	$(CONTROLLER_GEN) applyconfiguration paths="$(API_PKG)"
	$(CONTROLLER_GEN) crd paths="$(API_PKG)" output:crd:artifacts:config=deploy/crd
	cp deploy/crd/stormweir.io_*.yaml $(CHART_CRDS)/

## verify-generated: fail when the generated files differ from the API types.
verify-generated:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp -r $(GENERATED) "$$tmp"/; \
	$(MAKE) --no-print-directory generate >/dev/null; \
	if ! git diff --quiet --exit-code -- $(GENERATED) || [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		echo "generated files are stale: run 'make generate' and commit the result" >&2; \
		git status --short -- $(GENERATED) >&2; git diff --stat -- $(GENERATED) >&2; exit 1; \
	fi

## testbins: build (or reuse) kube-apiserver and etcd for envtest; prints the KUBEBUILDER_ASSETS dir.
testbins:
	@hack/testbins.sh

GO_TEST_FLAGS ?= -race -count=1 -timeout 20m
# FUZZ_TIME is each fuzz target's fuzzing time in `make test`; hack/fuzz.sh
# fails a target that executes fewer than FUZZ_MIN_EXECS inputs in it.
FUZZ_TIME ?= 10s
FUZZ_MIN_EXECS ?= 10000

## test: the whole suite against real Redis, NATS (in-process) and API server; installs what is missing first.
test:
	@KUBEBUILDER_ASSETS="$$(hack/test-deps.sh | tail -n 1)"; export KUBEBUILDER_ASSETS; \
	go test $(GO_TEST_FLAGS) ./... && \
	$(MAKE) --no-print-directory fuzz

## fuzz: each decoder fuzz target for FUZZ_TIME; fails one that executes fewer than FUZZ_MIN_EXECS inputs.
.PHONY: fuzz
fuzz:
	@export FUZZ_TIME=$(FUZZ_TIME) FUZZ_MIN_EXECS=$(FUZZ_MIN_EXECS); \
	hack/fuzz.sh ./pkg/signal/ FuzzDecodeAlertmanager && \
	hack/fuzz.sh ./pkg/signal/ FuzzDecodeGrafana && \
	hack/fuzz.sh ./pkg/signal/ FuzzDecodeKubernetesEvents

## test-faults: the fault tests' long forms (test/crash -long): 30,000 alerts per test, each fault (stage kills, NATS leader kills on an R3 cluster, Redis Sentinel and Cluster failovers, replica kills) repeated; the numbers of DESIGN.md §13 come from here.
.PHONY: test-faults
test-faults:
	@KUBEBUILDER_ASSETS="$$(hack/test-deps.sh | tail -n 1)"; export KUBEBUILDER_ASSETS; \
	go test $(GO_TEST_FLAGS) -timeout 45m -v ./test/crash/ -args -long

## bench: Go benchmarks of the stages against real Redis and in-process JetStream.
bench:
	@KUBEBUILDER_ASSETS="$$(hack/test-deps.sh | tail -n 1)"; export KUBEBUILDER_ASSETS; \
	go test -run '^$$' -bench . -benchtime 3s ./pkg/...

## lint: formatting and vet.
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./...

## bench-pipeline: the distributed pipeline benchmark (stage processes, NATS, Redis, API server); writes BENCHMARKS.md.
.PHONY: bench-pipeline
bench-pipeline:
	@KUBEBUILDER_ASSETS="$$(hack/test-deps.sh | tail -n 1)"; export KUBEBUILDER_ASSETS; \
	go run ./test/bench -out BENCHMARKS.md
