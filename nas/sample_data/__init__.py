"""Small data sets shipped inside the package, so the demo and the tests run without the network.

``bbc_sample/`` holds ``train.tsv`` and ``dev.tsv`` (header ``text<TAB>label``), built from the BBC News data set
by :mod:`nas.sample_data.make_bbc_sample`; :func:`nas.data.demo_task` loads it.
"""
