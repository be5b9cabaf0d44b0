.PHONY: demo test bench
demo:  ## set up .venv and run the first real job
	bash scripts/demo.sh
test:  ## set up .venv and run the test suite
	bash scripts/test.sh
bench:  ## renderer benchmark table
	bash scripts/setup.sh && .venv/bin/python benchmarks/render.py
