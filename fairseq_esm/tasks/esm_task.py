"""What every task of the plugin shares: proteins tokenized by one ESM alphabet, cropped to ``max_positions``."""

from fairseq.tasks import FairseqTask

from fairseq_esm.modules.alphabet import Alphabet


class EsmTask(FairseqTask):
    """A fairseq task over proteins: the alphabet is both dictionaries; ``cfg.max_positions`` bounds a sample."""

    def __init__(self, cfg, alphabet: Alphabet) -> None:
        super().__init__(cfg)
        self.alphabet = alphabet

    def max_positions(self) -> int:
        return self.cfg.max_positions

    @property
    def source_dictionary(self) -> Alphabet:
        return self.alphabet

    @property
    def target_dictionary(self) -> Alphabet:
        return self.alphabet
