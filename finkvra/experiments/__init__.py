"""Pool-based active-learning experiments: does a query strategy beat random labelling?

The service labels alerts one batch at a time, most informative first. Whether that
order is worth it is measured offline on a labelled table: start from a random
``initial`` batch, fit, then repeatedly let the learner score the still-unlabelled
*pool*, let the strategy pick ``step`` rows, reveal their labels, update, until
``max_labels``. After the initial batch and after every step the model is scored on
a separate *test* set, never on rows it learnt from, which gives one learning curve
(metric against number of labels) per configuration and seed.

Modules: `simulate` (the curves), `report` (their summaries, plots and MLflow runs),
`data` (the tables). The names below are re-exported here, the package's API.

- :func:`simulate` runs one curve; :func:`run_grid` runs many (:func:`expand_grid`
  builds every combination of the values to compare, each for every seed);
- :func:`summarise` gives the mean, std and standard error over seeds,
  :func:`paired_differences` each strategy minus a baseline on the same seeds (same
  first batch), with its standard error; :func:`plot_curves` draws the curves,
  :func:`log_experiment` records one MLflow run per configuration;
- :func:`load_table`, :func:`labelled_data` and :func:`split_pool_test` turn feature
  and label files into pool and test sets.

Seeds: with the same seed every strategy starts from the same initial batch (and the
same learner seed), so strategies are compared on paired runs; the seed also feeds the
strategy's private generator (the ``random`` baseline's draws).

Learner parameters: ``learning_rate`` and ``class_weight`` go to a learner only when
its constructor takes them (``hgb`` does, ``river-arf`` does not). For the others they
are recorded as ``"n/a"``, and combinations that then coincide are run once.
"""

from finkvra.experiments.data import DataReport, labelled_data, load_table, split_pool_test
from finkvra.experiments.report import (
    log_experiment,
    paired_differences,
    plot_curves,
    results_document,
    summarise,
    write_results,
)
from finkvra.experiments.simulate import (
    CONFIG_KEYS,
    METRICS,
    NOT_APPLICABLE,
    CurvePoint,
    ExperimentConfig,
    RunResult,
    expand_grid,
    run_grid,
    simulate,
)

__all__ = [
    "CONFIG_KEYS",
    "METRICS",
    "NOT_APPLICABLE",
    "CurvePoint",
    "DataReport",
    "ExperimentConfig",
    "RunResult",
    "expand_grid",
    "labelled_data",
    "load_table",
    "log_experiment",
    "paired_differences",
    "plot_curves",
    "results_document",
    "run_grid",
    "simulate",
    "split_pool_test",
    "summarise",
    "write_results",
]
