"""The embedded synthetic dataset: a small shop whose behaviour is driven by latent topics.

Deterministic given its parameters and seed. The generative story:

* Each of ``num_topics`` topics is a product theme (Skin Care, Coffee, Camping, ...) with its own
  nouns, features and a few generated brand names; every item belongs to one topic and gets a unique
  title (``"<brand> <adjective> <noun>"``), a description, categories and attributes made of its
  topic's words — so text-aware models can learn which items are alike.
* Item popularity is Zipf-like (weight ``rank ** -zipf``), topics are shuffled over ranks.
* Topics have 2 related topics; every item has 3 "successor" items (2 of its topic, 1 of a related
  topic), e.g. products bought together.
* Each user has a sparse topic mixture (Dirichlet). A sequence starts in a topic drawn from it; each
  next item is, with probability ``follow``, a successor of the previous item, otherwise a
  popularity-weighted item of the current topic after a topic step (stay / move to a related topic /
  redraw from the user's mixture). Users never repeat an item.
* Timestamps: a user starts at a random time in a two-year window, gaps are exponential (~3 days).
  Ratings 1-5 grow with item quality and the user's affinity to the item's topic.

Sequence models beat popularity here because the next item depends on the last item (successors)
and on the recent topic.
"""

from __future__ import annotations

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError

STORE = "Synthetic Shop"
START_TIME = 1_577_836_800  # 2020-01-01 UTC
WINDOW_SECONDS = 2 * 365 * 86_400
MEAN_GAP_SECONDS = 3 * 86_400

# (category, nouns, features): the vocabulary of each latent topic.
THEMES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Skin Care", ("Moisturizer", "Serum", "Cleanser", "Toner", "Face Mask", "Eye Cream"),
     ("hydrating", "hyaluronic acid", "vitamin C", "gentle", "fragrance-free", "dewy finish")),
    ("Hair Care", ("Shampoo", "Conditioner", "Hair Oil", "Hair Mask", "Styling Gel", "Dry Shampoo"),
     ("argan oil", "keratin", "frizz control", "volumizing", "color-safe", "sulfate-free")),
    ("Makeup", ("Lipstick", "Mascara", "Foundation", "Eyeliner", "Blush", "Concealer"),
     ("long-wearing", "matte", "buildable", "smudge-proof", "pigmented", "satin")),
    ("Fragrance", ("Eau de Parfum", "Body Mist", "Cologne", "Perfume Oil", "Scented Candle", "Roll-On"),
     ("floral", "citrus", "woody", "musk", "vanilla", "amber")),
    ("Nail Care", ("Nail Polish", "Top Coat", "Cuticle Oil", "Nail File", "Base Coat", "Nail Strengthener"),
     ("quick-dry", "chip-resistant", "glossy", "gel-like", "nourishing", "salon-grade")),
    ("Bath and Body", ("Body Wash", "Body Lotion", "Bath Bomb", "Body Scrub", "Hand Cream", "Shower Oil"),
     ("shea butter", "coconut", "exfoliating", "soothing", "lavender", "moisturizing")),
    ("Grooming", ("Beard Oil", "Shaving Cream", "Aftershave", "Safety Razor", "Beard Balm", "Face Wash"),
     ("sandalwood", "close shave", "cooling", "menthol", "cedar", "barber-style")),
    ("Sun Care", ("Sunscreen", "After-Sun Gel", "Tinted SPF", "Sun Stick", "Tanning Lotion", "Lip SPF"),
     ("SPF 50", "broad spectrum", "water-resistant", "reef-safe", "aloe", "mineral")),
    ("Kitchen", ("Chef Knife", "Cutting Board", "Frying Pan", "Spatula", "Mixing Bowl", "Measuring Cups"),
     ("stainless steel", "nonstick", "bamboo", "dishwasher-safe", "ergonomic", "cast iron")),
    ("Coffee", ("Coffee Beans", "French Press", "Espresso Cups", "Coffee Grinder", "Pour-Over Kettle", "Milk Frother"),
     ("dark roast", "single origin", "burr", "barista", "arabica", "crema")),
    ("Tea", ("Green Tea", "Loose Leaf Tea", "Tea Infuser", "Teapot", "Matcha Powder", "Herbal Tea"),
     ("organic", "oolong", "chamomile", "ceremonial", "slow-steeped", "jasmine")),
    ("Camping", ("Tent", "Sleeping Bag", "Camp Stove", "Headlamp", "Trekking Poles", "Water Filter"),
     ("waterproof", "lightweight", "backpacking", "ultralight", "trail-ready", "all-weather")),
    ("Fitness", ("Yoga Mat", "Resistance Bands", "Dumbbells", "Jump Rope", "Foam Roller", "Kettlebell"),
     ("non-slip", "workout", "strength", "home gym", "stretching", "cardio")),
    ("Gardening", ("Pruning Shears", "Garden Gloves", "Seed Kit", "Watering Can", "Planter", "Compost Bin"),
     ("heirloom", "raised bed", "succulent", "herb garden", "organic soil", "perennial")),
    ("Pet Supplies", ("Dog Leash", "Cat Toy", "Pet Bed", "Chew Toy", "Grooming Brush", "Food Bowl"),
     ("puppy", "kitten", "durable", "calming", "washable", "treat-dispensing")),
    ("Stationery", ("Notebook", "Fountain Pen", "Sketchbook", "Planner", "Gel Pens", "Washi Tape"),
     ("dotted", "archival ink", "journaling", "acid-free", "calligraphy", "refillable")),
    ("Audio", ("Headphones", "Bluetooth Speaker", "Earbuds", "Turntable", "Microphone", "Headphone Amp"),
     ("noise-cancelling", "wireless", "deep bass", "hi-fi", "studio", "long battery")),
    ("Board Games", ("Strategy Game", "Card Game", "Jigsaw Puzzle", "Party Game", "Dice Set", "Chess Set"),
     ("cooperative", "family", "1000-piece", "two-player", "tabletop", "expansion")),
    ("Baking", ("Stand Mixer", "Baking Sheet", "Rolling Pin", "Cake Pan", "Piping Set", "Sourdough Starter"),
     ("silicone", "artisan", "heavy-gauge", "springform", "pastry", "nonstick")),
    ("Cycling", ("Bike Helmet", "Bike Light", "Cycling Gloves", "Bike Lock", "Water Bottle Cage", "Saddle Bag"),
     ("aero", "reflective", "carbon", "commuter", "padded", "USB-rechargeable")),
)
ADJECTIVES = ("Classic", "Premium", "Essential", "Deluxe", "Everyday", "Pro", "Pure", "Ultra", "Natural",
              "Signature", "Mini", "Advanced", "Original", "Daily", "Gentle", "Bold", "Fresh", "Smart",
              "Compact", "Luxe")
SYLLABLES = ("lu", "mo", "ra", "ve", "xo", "ka", "ti", "no", "sa", "bel", "vin", "dor", "fa", "li", "zen",
             "qua", "ro", "mi", "tav", "el")
BRANDS_PER_TOPIC = 4
SUCCESSORS = 3
SUCCESSOR_WEIGHTS = np.array([0.5, 0.3, 0.2])

TINY = dict(num_users=300, num_items=200, num_topics=8, mean_length=9.0)
DEMO = dict(num_users=3000, num_items=800, num_topics=20, mean_length=10.0)
PRESETS = {"tiny": TINY, "demo": DEMO}


def make_synthetic(num_users: int = DEMO["num_users"], num_items: int = DEMO["num_items"], seed: int = 0,
                   num_topics: int = DEMO["num_topics"], mean_length: float = DEMO["mean_length"],
                   min_length: int = 5, max_length: int = 50, zipf: float = 1.0, topic_concentration: float = 0.3,
                   follow: float = 0.5, stay: float = 0.6, related: float = 0.25) -> Dataset:
    """Generate the synthetic shop (see the module docstring).

    Args:
      num_users, num_items: sizes; every user has ``min_length..max_length`` interactions.
      seed: everything is a deterministic function of the arguments.
      num_topics: latent topics, at most ``len(THEMES)``.
      mean_length: mean sequence length (>= min_length).
      zipf: popularity exponent.
      topic_concentration: Dirichlet concentration of user topic mixtures (small = few topics).
      follow: probability that the next item is a successor of the previous one.
      stay / related: probabilities of keeping the topic / moving to a related topic (else redraw
        from the user's mixture) when not following a successor.
    """
    if not 1 <= num_topics <= len(THEMES):
        raise DataError(f"num_topics must be in [1, {len(THEMES)}], got {num_topics}")
    if num_items < max(num_topics * (SUCCESSORS + 1), max_length + 1):
        raise DataError(f"num_items={num_items} is too small for {num_topics} topics and max_length={max_length}")
    if not 1 <= min_length <= mean_length <= max_length:
        raise DataError(f"need 1 <= min_length <= mean_length <= max_length, got "
                        f"{min_length}, {mean_length}, {max_length}")
    rng = np.random.default_rng(seed)
    item_topic = rng.permutation(np.arange(num_items) % num_topics)
    popularity = rng.permutation(np.arange(1, num_items + 1, dtype=np.float64) ** -zipf)
    quality = rng.normal(0.0, 0.6, num_items)
    topic_items = [np.flatnonzero(item_topic == z) for z in range(num_topics)]
    topic_probs = [popularity[ids] / popularity[ids].sum() for ids in topic_items]
    related_topics = _related_topics(rng, num_topics)
    successors = _successors(rng, item_topic, topic_items, topic_probs, related_topics)
    items = _item_texts(rng, item_topic, topic_items, num_topics)

    mixtures = rng.dirichlet(np.full(num_topics, topic_concentration), num_users)
    extra = rng.geometric(1.0 / (mean_length - min_length + 1), num_users) - 1
    lengths = np.minimum(min_length + extra, max_length)
    sequences, timestamps, ratings = [], [], []
    for u in range(num_users):
        seq = _user_sequence(rng, int(lengths[u]), mixtures[u], item_topic, topic_items, topic_probs,
                             related_topics, successors, follow, stay, related)
        gaps = np.maximum(1, rng.exponential(MEAN_GAP_SECONDS, len(seq))).astype(np.int64)
        start = START_TIME + int(rng.integers(0, WINDOW_SECONDS))
        affinity = np.tanh(np.log(num_topics * mixtures[u][item_topic[seq]] + 1e-3))
        score = 3.6 + quality[seq] + 0.8 * affinity + rng.normal(0.0, 0.5, len(seq))
        sequences.append(seq)
        timestamps.append(start + np.cumsum(gaps))
        ratings.append(np.clip(np.rint(score), 1, 5))
    info = {"source": "synthetic", "generator": {
        "seed": seed, "num_users": num_users, "num_items": num_items, "num_topics": num_topics,
        "mean_length": mean_length, "min_length": min_length, "max_length": max_length, "zipf": zipf,
        "topic_concentration": topic_concentration, "follow": follow, "stay": stay, "related": related}}
    return Dataset.from_sequences(sequences, items, user_raw_ids=[f"user{u}" for u in range(num_users)],
                                  timestamps=timestamps, ratings=ratings, name="synthetic", info=info)


def make_preset(name: str, seed: int = 0) -> Dataset:
    """The ``tiny`` (tests) or ``demo`` (default for `jaxrec demo`) synthetic dataset."""
    if name not in PRESETS:
        raise DataError(f"unknown synthetic preset {name!r}; expected one of {sorted(PRESETS)}")
    return make_synthetic(seed=seed, **PRESETS[name])


def _related_topics(rng: np.random.Generator, num_topics: int) -> np.ndarray:
    """int [T, 2]: two other topics per topic (itself when there is no other)."""
    out = np.zeros((num_topics, 2), dtype=np.int64)
    for z in range(num_topics):
        others = np.delete(np.arange(num_topics), z)
        out[z] = rng.choice(others, 2, replace=len(others) < 2) if others.size else z
    return out


def _successors(rng, item_topic, topic_items, topic_probs, related_topics) -> np.ndarray:
    """int [I, 3]: per item two popular items of its topic and one of a related topic."""
    out = np.zeros((item_topic.shape[0], SUCCESSORS), dtype=np.int64)
    for i, z in enumerate(item_topic):
        mask = topic_items[z] != i
        same = rng.choice(topic_items[z][mask], 2, replace=False, p=_normalize(topic_probs[z][mask]))
        r = related_topics[z, rng.integers(2)]
        other = rng.choice(topic_items[r], p=topic_probs[r])
        out[i] = [same[0], same[1], other if other != i else same[0]]
    return out


def _normalize(p: np.ndarray) -> np.ndarray:
    return p / p.sum()


def _user_sequence(rng, length, mixture, item_topic, topic_items, topic_probs, related_topics, successors,
                   follow, stay, related) -> np.ndarray:
    """int32 [length]: one user's items, no repeats."""
    seen: set[int] = set()
    seq: list[int] = []
    topic = int(rng.choice(len(mixture), p=mixture))
    while len(seq) < length:
        item = -1
        if seq and rng.random() < follow:
            item = int(successors[seq[-1], rng.choice(SUCCESSORS, p=SUCCESSOR_WEIGHTS)])
        if item < 0 or item in seen:
            if seq:
                step = rng.random()
                if step >= stay + related:
                    topic = int(rng.choice(len(mixture), p=mixture))
                elif step >= stay:
                    topic = int(related_topics[topic, rng.integers(2)])
            item = _unseen_item(rng, topic, topic_items, topic_probs, seen)
        topic = int(item_topic[item])
        seen.add(item)
        seq.append(item)
    return np.asarray(seq, dtype=np.int32)


def _unseen_item(rng, topic, topic_items, topic_probs, seen) -> int:
    """A popularity-weighted item of ``topic`` (or, if all are seen, of any topic) not in ``seen``."""
    for _ in range(8):
        item = int(rng.choice(topic_items[topic], p=topic_probs[topic]))
        if item not in seen:
            return item
    candidates = [(z, i) for z, ids in enumerate(topic_items) for i in ids.tolist() if i not in seen]
    order = sorted(candidates, key=lambda zi: (zi[0] != topic, zi[1]))
    return order[0][1]


def _brand_names(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct pronounceable brand names."""
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(SYLLABLES, int(rng.integers(2, 4)))).capitalize()
        if name not in names:
            names.append(name)
    return names


def _item_texts(rng, item_topic, topic_items, num_topics) -> list[dict]:
    """Per item: raw_id, unique title, description, brand, categories, attributes."""
    brands = _brand_names(rng, num_topics * BRANDS_PER_TOPIC)
    items: list[dict] = [{} for _ in range(item_topic.shape[0])]
    for z in range(num_topics):
        category, nouns, features = THEMES[z]
        topic_brands = brands[z * BRANDS_PER_TOPIC:(z + 1) * BRANDS_PER_TOPIC]
        n_combos = BRANDS_PER_TOPIC * len(ADJECTIVES) * len(nouns)
        ids = topic_items[z]
        picks = rng.permutation(max(n_combos, ids.size))
        for k, i in enumerate(ids.tolist()):
            combo = int(picks[k]) % n_combos
            brand = topic_brands[combo % BRANDS_PER_TOPIC]
            adjective = ADJECTIVES[(combo // BRANDS_PER_TOPIC) % len(ADJECTIVES)]
            noun = nouns[combo // (BRANDS_PER_TOPIC * len(ADJECTIVES))]
            edition = int(picks[k]) // n_combos
            title = f"{brand} {adjective} {noun}" + (f" No. {edition + 1}" if edition else "")
            f1, f2 = rng.choice(len(features), 2, replace=False)
            items[i] = {
                "raw_id": str(i),
                "title": title,
                "description": f"{features[f1].capitalize()}, {features[f2]} {noun} by {brand}, "
                               f"from the {category} collection.",
                "brand": brand,
                "categories": [STORE, category, noun],
                "attributes": [features[f1], features[f2]],
            }
    return items
