"""Dispatch: fires become executions, commands go to runtimes, results update records."""
