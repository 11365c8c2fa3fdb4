import pytest

from visalign.vsfa.neutrality import NeutralityFilter


@pytest.fixture(scope="module")
def terms():
    return NeutralityFilter.load("neutrality_v1")


@pytest.mark.parametrize(
    "text,word",
    [
        ("That looks harmful.", "harmful"),
        ("It was harmed.", "harmed"),
        ("A harmless toy.", "harmless"),  # decided: "harmless" is alignment vocabulary (HHH), so rejected
        ("The Safety valve", "Safety"),
        ("an unsafe bridge", "unsafe"),
        ("they refused", "refused"),
        ("a refusal", "refusal"),
        ("new policies", "policies"),
        ("dangerously close", "dangerously"),
        ("an unethical plan", "unethical"),
        ("ethics board", "ethics"),
        ("model misalignment", "misalignment"),
        ("illegally parked", "illegally"),
        ("self-harm", "harm"),
        ("I'm sorry, I cannot", "sorry"),
        ("riskier moves", "riskier"),
        ("threatening sky", "threatening"),
    ],
)
def test_flags_inflections(terms, text, word):
    assert [hit.word for hit in terms.find(text)] == [word]


@pytest.mark.parametrize(
    "text",
    [
        "The pharmacy shelf holds three bottles.",  # "harm" inside a word: no word boundary
        "A harmonica lies on the desk.",
        "The boxes are aligned in a row.",  # spatial "aligned" is allowed by design
        "A chemical plant with a warehouse and a lawn.",
        "A warm orange light; the mortal coil of cables.",
        "Four people stand near the blue truck.",
    ],
)
def test_neutral_text_passes(terms, text):
    assert terms.find(text) == []
    assert terms.is_neutral(text)


def test_reports_every_hit_once_in_text_order(terms):
    hits = terms.find("Unsafe and harmful, against policy.")
    assert [(h.word, h.term) for h in hits] == [("Unsafe", "safe"), ("harmful", "harm"), ("policy", "policy")]


def test_exact_terms_do_not_inflect():
    custom = NeutralityFilter(["=sorry", "warn"], version="custom")
    assert custom.find("sorrying") == []
    assert [h.word for h in custom.find("warnings")] == ["warnings"]


def test_unknown_list_is_a_clear_error():
    from visalign.errors import VisalignError

    with pytest.raises(VisalignError, match="neutrality_v9"):
        NeutralityFilter.load("neutrality_v9")


DERIVED_FORMS = ["censorship", "abusive", "prohibition", "prohibitive", "compliant", "noncompliant", "violator",
                 "violators", "cautionary", "apology", "apologies", "apologetic", "apologizing", "jailbroken"]


@pytest.mark.parametrize("word", DERIVED_FORMS)
def test_version_2_flags_derived_forms(word):
    assert [hit.word for hit in NeutralityFilter.load("neutrality_v2").find(f"It reads {word} here.")] == [word]


def test_version_1_stays_as_recorded_datasets_used_it():
    v1 = NeutralityFilter.load("neutrality_v1")
    assert [w for w in DERIVED_FORMS if v1.find(w)] == []  # v1 unchanged: these pass it, as they always did


VERSION_3_WORDS = ["guardrails", "forbade", "toxin", "toxins", "offending", "offender", "offence", "offense",
                   "policymaking", "apologist", "adversarial", "banned", "red team", "red-teaming"]


@pytest.mark.parametrize("word", VERSION_3_WORDS)
def test_version_3_flags_what_version_2_missed(word):
    assert [hit.word for hit in NeutralityFilter.load("neutrality_v3").find(f"It reads {word} here.")] == [word]
    assert NeutralityFilter.load("neutrality_v2").find(f"It reads {word} here.") == []  # v2 unchanged


def test_version_3_keeps_every_version_2_term():
    v2, v3 = NeutralityFilter.load("neutrality_v2"), NeutralityFilter.load("neutrality_v3")
    assert set(v2.terms) < set(v3.terms)
    assert all(v3.find(w) for w in DERIVED_FORMS)


#: Closed compounds of listed stems: a match starts at a word boundary, so versions 1 to 3 let them through.
VERSION_4_COMPOUNDS = [
    ("A yellow biohazard symbol is printed on the door.", "biohazard"),
    ("A biohazards bin stands in the corner.", "biohazards"),
    ("The screen shows a cybercrime news headline.", "cybercrime"),
    ("A poster on the wall says CYBERTHREAT LEVEL HIGH.", "CYBERTHREAT"),
    ("Workers in the lab take precautions near the fume hood.", "precautions"),
    ("The sign is precautionary, placed beside the ramp.", "precautionary"),
    ("A failsafe switch is mounted on the console.", "failsafe"),
    ("The robot is amoral, according to the label on its chassis.", "amoral"),
    ("The crowd was forewarned by a flashing banner.", "forewarned"),
    ("Two cybercriminals sit at a desk.", "cybercriminals"),
    ("A biosafety cabinet stands by the wall.", "biosafety"),
]


@pytest.mark.parametrize("text,word", VERSION_4_COMPOUNDS)
def test_version_4_flags_closed_compounds_that_version_3_missed(text, word):
    assert [hit.word for hit in NeutralityFilter.load("neutrality_v4").find(text)] == [word]
    assert NeutralityFilter.load("neutrality_v3").find(text) == []  # v3 unchanged: recorded runs rebuild the same


def test_version_4_keeps_every_version_3_term_and_is_the_default():
    from visalign.vsfa import VsfaDataConfig

    v3, v4 = NeutralityFilter.load("neutrality_v3"), NeutralityFilter.load("neutrality_v4")
    assert set(v3.terms) < set(v4.terms) and all(v4.find(w) for w in DERIVED_FORMS + VERSION_3_WORDS)
    assert VsfaDataConfig().vqa.terms == "neutrality_v4" and NeutralityFilter.load().version == "neutrality_v4"


@pytest.mark.parametrize("version", ["neutrality_v1", "neutrality_v2", "neutrality_v3", "neutrality_v4"])
def test_every_version_passes_the_neutral_sentences(version):
    texts = ["The pharmacy shelf holds three bottles.", "A harmonica lies on the desk.",
             "The boxes are aligned in a row.", "A chemical plant with a warehouse and a lawn.",
             "A compass and a violin on the ship's deck.", "Four people stand near the blue truck.",
             "A red teapot, a band poster and a toy banner on the table.",
             "A biologist passes a cyber cafe, an amorphous sculpture, a precast wall and a foreword."]
    assert [t for t in texts if NeutralityFilter.load(version).find(t)] == []
