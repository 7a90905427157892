"""Datasets generated in code: facts about invented entities, which no model can have memorised.

`invented_facts` writes 200 short documents about invented people, towns and inventions (four
facts each, as natural sentences in varied wording and order) and one question per fact (a chat
row: the user asks, the assistant gives the short answer; `source` names the document that states
it). The test split asks about facts no training row states: all the facts of 12 entities whose
names appear nowhere else (not in another document, not in any training row), and one fact each
of 52 entities whose other facts are training questions. Fine-tuning on the training questions
alone therefore cannot know a test answer; retrieval over the documents can. Everything follows
from the seed: the same seed gives the same rows, byte for byte.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

PEOPLE, TOWNS, INVENTIONS = 70, 65, 65
HELD_OUT_PER_KIND = 4  # entities all of whose facts are test questions
SEEN_TEST_FACTS = 52  # test facts of entities whose other facts are training questions

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "st", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ia", "ei"]
_CODAS = ["", "", "", "", "n", "r", "l", "s"]
_TOWN_ENDINGS = ["moor", "wick", "holt", "mere", "ford", "stead", "haven", "dale", "brook", "thorpe"]
_OBJECTS = ["lamp", "loom", "compass", "kettle", "telescope", "pump", "clock", "press", "sextant", "bellows",
            "lantern", "barometer", "mill", "plough", "harness"]
_PROFESSIONS = ["glassblower", "cartographer", "beekeeper", "clockmaker", "bookbinder", "shipwright", "astronomer",
                "apothecary", "weaver", "stonemason", "botanist", "violin maker", "tanner", "engraver", "ropemaker",
                "chemist", "surveyor", "potter", "brewer", "locksmith"]
_INSTRUMENTS = ["oboe", "cello", "harp", "lute", "flute", "accordion", "zither", "bagpipes", "violin", "trumpet",
                "mandolin", "dulcimer"]
_EXPORTS = ["copper", "wool", "salt", "paper", "honey", "glass", "timber", "cheese", "tin", "silk", "lace", "cider",
            "slate", "amber", "linen"]
_MATERIALS = ["brass", "oak", "copper", "cedar wood", "pewter", "bronze", "walnut", "iron", "silver", "tin", "ash wood",
              "whalebone"]

# Each fact: sentences that state it (one is chosen per document) and the question that asks it.
# {ref} is the entity as the sentence names it (the full name first, a shorter name after).
_FACTS: dict[str, dict[str, tuple[list[str], str]]] = {
    "person": {
        "birth_year": (["{ref} was born in {value}.", "Born in {value}, {ref} grew up far from any city.",
                        "The parish records give {value} as the year of {ref}'s birth."],
                       "In what year was {name} born?"),
        "birthplace": (["{ref} came from {value}, where the family had lived for generations.",
                        "{ref}'s birthplace was the town of {value}.", "{ref} spent a childhood in {value}."],
                       "In which town was {name} born?"),
        "profession": (["{ref} worked as {article} {value}.", "By trade, {ref} was {article} {value}.",
                        "{ref} earned a living as {article} {value} for most of a long life."],
                       "What was {name}'s profession?"),
        "instrument": (["{ref} played the {value} in the evenings.", "In spare hours {ref} played the {value}.",
                        "Friends remembered {ref} for playing the {value} at every wedding."],
                       "Which instrument did {name} play?"),
    },
    "town": {
        "founded": (["{ref} was founded in {value}.", "The first houses of {ref} were built in {value}.",
                     "Records date the founding of {ref} to {value}."],
                    "In what year was {name} founded?"),
        "founder": (["{ref} was founded by {value}.", "{value} is remembered as the founder of {ref}.",
                     "The settlement of {ref} was started by {value}."],
                    "Who founded {name}?"),
        "river": (["{ref} lies on the {value} river.", "The {value} river runs through {ref}.",
                   "{ref} grew up along the banks of the {value}."],
                  "On which river does {name} lie?"),
        "export": (["{ref} is best known for its {value}.", "The main export of {ref} is {value}.",
                    "Merchants travel to {ref} to buy its {value}."],
                   "What is the main export of {name}?"),
    },
    "invention": {
        "inventor": (["The {ref} was invented by {value}.", "{value} invented the {ref}.",
                      "The {ref} was the work of {value}."],
                     "Who invented the {name}?"),
        "year": (["The first {ref} was built in {value}.", "The {ref} was first made in {value}.",
                  "In {value} the first {ref} was finished."],
                 "In what year was the first {name} built?"),
        "material": (["The {ref} is made of {value}.", "Every {ref} is made from {value}.",
                      "Its makers build the {ref} out of {value}."],
                     "What is the {name} made of?"),
        "shown_in": (["The {ref} was first shown to the public in {value}.",
                      "The first demonstration of the {ref} took place in {value}.",
                      "{value} is where the {ref} was first demonstrated."],
                     "In which town was the {name} first demonstrated?"),
    },
}
_CLOSINGS = {
    "person": ["Little else is recorded about {ref}.", "Letters by {ref} survive in a local archive.", ""],
    "town": ["Visitors often remark on the narrow streets of {ref}.", "{ref} holds a market every week.", ""],
    "invention": ["A working {ref} is kept in a small museum.", "Few examples of the {ref} survive today.", ""],
}


@dataclass
class _Entity:
    kind: str  # person, town or invention
    name: str  # as questions name it
    short: str  # as later sentences of its document name it
    facts: dict[str, str]
    document: str = ""  # the id of its document


def invented_facts(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The `documents` ({id, title, text}) and the `train` and `test` question rows, from `seed`."""
    rng = random.Random(f"invented-facts-{seed}")
    words = _NameMaker(rng)
    people = [_Entity("person", f"{first} {last}", last, {})
              for first, last in ((words.make(2), words.make(rng.choice([2, 3]))) for _ in range(PEOPLE))]
    towns = [_Entity("town", name, name, {}) for name in (words.make(2, rng.choice(_TOWN_ENDINGS)) for _ in range(TOWNS))]
    inventions = [_Entity("invention", f"{words.make(2)} {rng.choice(_OBJECTS)}", "", {}) for _ in range(INVENTIONS)]
    held_out = {id(e) for group in (people, towns, inventions) for e in rng.sample(group, HELD_OUT_PER_KIND)}
    # A held-out entity is named only in its own document and its own (test) questions.
    named_people = [p for p in people if id(p) not in held_out]
    named_towns = [t for t in towns if id(t) not in held_out]
    for person in people:
        born = rng.randint(1690, 1880)
        person.facts = {"birth_year": str(born), "birthplace": rng.choice(named_towns).name,
                        "profession": rng.choice(_PROFESSIONS), "instrument": rng.choice(_INSTRUMENTS)}
    for town in towns:
        founder = rng.choice(named_people)
        town.facts = {"founded": str(int(founder.facts["birth_year"]) + rng.randint(20, 50)), "founder": founder.name,
                      "river": words.make(rng.choice([2, 3])), "export": rng.choice(_EXPORTS)}
    for invention in inventions:
        inventor = rng.choice(named_people)
        invention.short = invention.name
        invention.facts = {"inventor": inventor.name, "year": str(int(inventor.facts["birth_year"]) + rng.randint(22, 60)),
                           "material": rng.choice(_MATERIALS), "shown_in": rng.choice(named_towns).name}
    entities = people + towns + inventions
    rng.shuffle(entities)
    documents = []
    for number, entity in enumerate(entities):
        entity.document = f"doc-{number:03d}"
        documents.append({"id": entity.document, "title": entity.name, "text": _write_document(entity, rng)})
    seen = [e for e in entities if id(e) not in held_out]
    seen_test = {id(e): rng.choice(sorted(e.facts)) for e in rng.sample(seen, SEEN_TEST_FACTS)}
    train, test = [], []
    for entity in entities:
        for attribute in sorted(entity.facts):
            in_test = id(entity) in held_out or seen_test.get(id(entity)) == attribute
            row = _question_row(entity, attribute, entity_in_training=id(entity) not in held_out)
            (test if in_test else train).append(row)
    rng.shuffle(train)
    rng.shuffle(test)
    return {"documents": documents, "train": train, "test": test}


def _write_document(entity: _Entity, rng: random.Random) -> str:
    attributes = list(entity.facts)
    rng.shuffle(attributes)
    sentences = []
    for number, attribute in enumerate(attributes):
        value = entity.facts[attribute]
        template = rng.choice(_FACTS[entity.kind][attribute][0])
        ref = entity.name if number == 0 else entity.short
        sentence = template.format(ref=ref, value=value, article="an" if value[0] in "aeiou" else "a")
        sentences.append(sentence[0].upper() + sentence[1:])
    closing = rng.choice(_CLOSINGS[entity.kind]).format(ref=entity.short)
    return " ".join(sentences + ([closing] if closing else []))


def _question_row(entity: _Entity, attribute: str, *, entity_in_training: bool) -> dict[str, Any]:
    question = _FACTS[entity.kind][attribute][1].format(name=entity.name)
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": entity.facts[attribute]}],
            "source": entity.document, "entity": entity.name, "attribute": attribute,
            "entity_in_training": entity_in_training}


class _NameMaker:
    """Pronounceable invented words, never the same one twice."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def make(self, syllables: int, ending: str = "") -> str:
        while True:
            word = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                           for _ in range(syllables)) + ending
            if word not in self.used:
                self.used.add(word)
                return word.capitalize()



TEST_DOCUMENTS = 40  # invented-entities: the sentences of this many documents are the test split
_YEAR = re.compile(r"\b1[6-9]\d\d\b")


def invented_entities(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Named-entity rows ({text, entities: [{start, end, label}]}) made from invented-facts'
    documents, one row per sentence: people (PER, full and short names), towns and rivers (LOC),
    inventions (PRODUCT) and years (DATE). No model has seen these names; the tags follow from how
    each sentence was generated. The test split is every sentence of 40 documents drawn by the seed."""
    facts = invented_facts(seed)
    gazetteer = _gazetteer(facts)
    names = sorted(gazetteer, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(name) for name in names) + r")\b")
    rng = random.Random(f"invented-entities-{seed}")
    test_ids = set(rng.sample(sorted(d["id"] for d in facts["documents"]), TEST_DOCUMENTS))
    parts: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for document in facts["documents"]:
        for sentence in re.split(r"(?<=\.) ", document["text"]):
            found = [(m.start(), m.end(), gazetteer[m.group(0)]) for m in pattern.finditer(sentence)]
            found += [(m.start(), m.end(), "DATE") for m in _YEAR.finditer(sentence)]
            entities = [{"start": s, "end": e, "label": label} for s, e, label in sorted(found)]
            parts["test" if document["id"] in test_ids else "train"].append(
                {"text": sentence, "entities": entities, "document": document["id"]})
    return parts


def _gazetteer(facts: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Every invented name and its type, from the documents' titles and the question rows' answers."""
    kind_of_attribute = {"birth_year": "PER", "founded": "LOC", "inventor": "PRODUCT"}  # one attribute each kind has
    names: dict[str, str] = {}
    for row in facts["train"] + facts["test"]:
        if row["attribute"] in kind_of_attribute:
            names[row["entity"]] = kind_of_attribute[row["attribute"]]
        if row["attribute"] == "river":
            names[row["messages"][1]["content"]] = "LOC"
    names.update({name.split()[-1]: "PER" for name, kind in list(names.items()) if kind == "PER"})  # a person's short name
    return names


UNANSWERABLE_EVERY = 8  # invented-qa: every 8th question is asked of another document, which cannot answer it


def invented_qa(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Extractive QA rows (SQuAD 2.0 style: {id, question, context, answers: {text, answer_start}})
    from invented-facts: each question with its source document as the context, the answer where
    the document states it; every 8th question instead gets a document about another entity of the
    same kind (no answer). The splits are invented-facts' own: no test fact is stated in a training row."""
    facts = invented_facts(seed)
    documents = {d["id"]: d for d in facts["documents"]}
    by_kind: dict[str, list[str]] = {}
    for row in facts["train"] + facts["test"]:
        by_kind.setdefault(row["attribute"], []).append(row["source"])
    rng = random.Random(f"invented-qa-{seed}")
    parts: dict[str, list[dict[str, Any]]] = {}
    for split in ("train", "test"):
        parts[split] = []
        for number, row in enumerate(facts[split]):
            question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
            source = row["source"]
            if number % UNANSWERABLE_EVERY == UNANSWERABLE_EVERY - 1:
                source = rng.choice([d for d in sorted(set(by_kind[row["attribute"]])) if d != row["source"]])
            context = documents[source]["text"]
            start = context.find(answer) if source == row["source"] else -1
            if source == row["source"] and start < 0:
                raise ValueError(f"invented-qa: the answer {answer!r} is not in its document {source}")
            answers = {"text": [answer], "answer_start": [start]} if start >= 0 else {"text": [], "answer_start": []}
            parts[split].append({"id": f"{split}-{number}", "question": question, "context": context, "answers": answers,
                                 "source": source})
    return parts
