"""The book's LaTeX as data.

``parse`` turns the maths a reader sees into statements, relation steps and expression
trees (pure Python: pylatexenc's tokenizer and a recursive-descent parser); ``extract``
finds a derivation's maths in a chapter source (markdown-it, no docutils); ``evaluate``
computes those trees on torch tensors, with partial derivatives taken by autograd. The
checks in the kernel use all three; the Sphinx side only ever needs ``parse`` and
``extract`` (they import neither torch nor Sphinx).
"""
