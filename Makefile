# Two commands for a fresh machine (see README.md):
#   make book   create .venv, generate the synthetic cohort, run every stage, build the book
#   make book-full   the same, plus the ablation runs (the causal and row-range cohorts) and the value model the results page compares
#   make book-small   the same at the classroom size (4 epochs, 200 resamples; the default's data)
#   make test   create .venv, lint (ruff) and run the test suite
#   make book-mimic-demo   the same book on the open MIMIC demo (downloaded from PhysioNet)
# one for the classroom:
#   make lab    install JupyterLab into .venv and open the notebooks in it
# and one to publish:
#   make publish   build the fuller book (make book-full, cached), then push _build/html to the gh-pages branch of REMOTE
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel on machines that carry it locally; the usual wheels elsewhere.
TORCH_SPEC ?= torch==2.13.0

# the git remote that `make publish` pushes the gh-pages branch to
REMOTE ?= origin

.PHONY: venv book book-full book-small book-mimic-demo test test-fast lint lab publish clean

ifneq ($(filter publish,$(MAKECMDGOALS)),)
ifeq ($(shell git remote get-url $(REMOTE) 2>/dev/null),)
$(error make publish: no git remote '$(REMOTE)' to push the book to; add one (git remote add $(REMOTE) URL) or set REMOTE=NAME)
endif
endif

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

book: venv
	$(BIN)/labecg book

# the fuller build: also the value model (labecg.book.FULL_VARIANTS) and the ablations (labecg.cohort.ABLATIONS: the causal and row-range cohorts), each a cohort,
# signals and a trained model more; what the Pages workflow publishes
book-full: venv
	$(BIN)/labecg book --full

# The whole book on the open MIMIC demo (real rows, ODbL; README, book/mimic.md): download it
# (verified; a rerun fetches only what is missing), then cohort with every fold assigned (no
# MIMIC-IV-ECG-ICD in the demo) and --min-per-class 4, the largest value that keeps targets on
# its 92 patients with ECGs, signals from its waveforms, training and evaluation. The book in
# _build/html is then the demo's; `make book` builds the synthetic one again.
MIMIC_DEMO ?= data/mimic-demo
MIMIC_DEMO_BOOK = --data-root $(MIMIC_DEMO) --no-generate-synthetic --unlisted-ecgs assign --min-per-class 4 \
	--cohort-dir data/mimic-demo-cohort --run-dir runs/mimic-demo
book-mimic-demo: venv
	$(BIN)/labecg download mimic-demo --data-root $(MIMIC_DEMO) $(if $(BASE_URL),--base-url $(BASE_URL))
	$(BIN)/labecg book $(MIMIC_DEMO_BOOK)
# A classroom size (book/classroom.md): the default's 3,000 patients, cohort rules, data and
# cohort folders (reused when the default book built them), 4 epochs instead of 12 and 200
# bootstrap resamples instead of 1000, in its own run folder.
SMALL_FLAGS := --epochs 4 --n-iterations 200 --run-dir runs/small
book-small: venv
	$(BIN)/labecg book $(SMALL_FLAGS)

# JupyterLab and ipywidgets (notebook progress bars) from the project's environment, whose
# kernel runs .venv's Python; the notebooks resolve their paths against the repository.
lab: $(VENV)/.lab-installed
	$(BIN)/jupyter lab notebooks/01_data.ipynb

$(VENV)/.lab-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install -q -e ".[lab]"
	touch $@

# pytest-xdist: one worker per core, each test file on one worker (its session fixtures,
# e.g. the test book, are built once); 210 s against 370 s in one process on 2 cores
PYTEST_WORKERS ?= auto
test: venv lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# ruff (pyflakes, bugbear, complexity; pyproject.toml [tool.ruff]): no finding allowed
lint: venv
	$(BIN)/ruff check .

# the inner loop: every test not marked slow (no notebook, book build, browser or end-to-end training)
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow" -n $(PYTEST_WORKERS) --dist loadfile

# What the Pages workflow does on the default branch (.github/workflows/book.yml). Pages then
# serves the gh-pages branch; .nojekyll keeps its _static/ and _sources/ folders.
publish: book-full
	$(BIN)/ghp-import --no-jekyll --no-history --force --push --remote $(REMOTE) --branch gh-pages \
		--message "book built from $$(git rev-parse --short HEAD)" _build/html

clean:
	rm -rf _build data runs book/notebooks artifacts
