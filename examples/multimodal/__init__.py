"""The multimodal scenario: generated product listings (``dataset``: a photo-like JPEG and a title, six
classes) and the training run on them (``training``), what ``python -m jobs train-multimodal`` trains. The
platform's model, Triton export and preprocessing service take the class names and the title vocabulary
(``dataset.VOCABULARY``) from the trained model."""
