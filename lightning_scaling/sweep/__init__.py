"""The sweep: plan a stage, train its runs on an executor, refit, until the budget is spent."""

__all__: list[str] = []
