"""One module per drill; each defines ``DRILL``, an instance of a ``Drill`` subclass."""
