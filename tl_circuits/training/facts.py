"""Short encyclopedic English about places, people, sports and everyday reasoning, written from
fact tables shipped here: the part of the default corpus that reads like attribution prompts.

Every text is a paragraph of a few sentences about one country, city landmark, athlete or person,
or a small worked question ("If a train leaves at 3 pm and the trip takes 2 hours, ..."), in
phrasings that vary with a seeded random choice, so the same fact appears in several wordings
(statement, question and answer, "Fact:" line). Nothing is downloaded; :func:`fact_texts` is
deterministic.
"""

from __future__ import annotations

import random

#: country, capital, continent, language, currency, something it is known for
COUNTRIES = (
    ("France", "Paris", "Europe", "French", "the euro", "the Eiffel Tower and its wine"),
    ("Germany", "Berlin", "Europe", "German", "the euro", "its cars and the Brandenburg Gate"),
    ("Italy", "Rome", "Europe", "Italian", "the euro", "pizza, pasta and the Colosseum"),
    ("Spain", "Madrid", "Europe", "Spanish", "the euro", "flamenco and the Sagrada Familia"),
    ("Portugal", "Lisbon", "Europe", "Portuguese", "the euro", "its explorers and port wine"),
    ("the United Kingdom", "London", "Europe", "English", "the pound", "Big Ben and the Beatles"),
    ("Ireland", "Dublin", "Europe", "English and Irish", "the euro", "its green hills"),
    ("the Netherlands", "Amsterdam", "Europe", "Dutch", "the euro", "windmills and tulips"),
    ("Belgium", "Brussels", "Europe", "Dutch and French", "the euro", "chocolate and waffles"),
    ("Switzerland", "Bern", "Europe", "German and French", "the Swiss franc", "the Alps and watches"),
    ("Austria", "Vienna", "Europe", "German", "the euro", "classical music"),
    ("Greece", "Athens", "Europe", "Greek", "the euro", "the Parthenon and ancient philosophy"),
    ("Sweden", "Stockholm", "Europe", "Swedish", "the Swedish krona", "the Nobel Prize"),
    ("Norway", "Oslo", "Europe", "Norwegian", "the Norwegian krone", "its fjords"),
    ("Poland", "Warsaw", "Europe", "Polish", "the zloty", "Chopin and Marie Curie"),
    ("Russia", "Moscow", "Europe and Asia", "Russian", "the ruble", "the Kremlin and its winters"),
    ("Egypt", "Cairo", "Africa", "Arabic", "the Egyptian pound", "the pyramids and the Nile"),
    ("Kenya", "Nairobi", "Africa", "Swahili and English", "the Kenyan shilling", "its runners"),
    ("Nigeria", "Abuja", "Africa", "English", "the naira", "its music and films"),
    ("South Africa", "Pretoria", "Africa", "English and Zulu", "the rand", "Table Mountain"),
    ("Morocco", "Rabat", "Africa", "Arabic", "the dirham", "the markets of Marrakesh"),
    ("Japan", "Tokyo", "Asia", "Japanese", "the yen", "Mount Fuji and sushi"),
    ("China", "Beijing", "Asia", "Chinese", "the yuan", "the Great Wall"),
    ("India", "New Delhi", "Asia", "Hindi and English", "the rupee", "the Taj Mahal and cricket"),
    ("South Korea", "Seoul", "Asia", "Korean", "the won", "its phones and pop music"),
    ("Thailand", "Bangkok", "Asia", "Thai", "the baht", "its temples and beaches"),
    ("Vietnam", "Hanoi", "Asia", "Vietnamese", "the dong", "its rice fields and coffee"),
    ("Turkey", "Ankara", "Europe and Asia", "Turkish", "the lira", "Istanbul and its bazaars"),
    ("Iran", "Tehran", "Asia", "Persian", "the rial", "Persian carpets"),
    ("Australia", "Canberra", "Oceania", "English", "the Australian dollar", "kangaroos"),
    ("New Zealand", "Wellington", "Oceania", "English and Maori", "the New Zealand dollar", "rugby"),
    ("the United States", "Washington, D.C.", "North America", "English", "the dollar",
     "Hollywood and the Statue of Liberty"),
    ("Canada", "Ottawa", "North America", "English and French", "the Canadian dollar", "ice hockey"),
    ("Mexico", "Mexico City", "North America", "Spanish", "the peso", "tacos and ancient pyramids"),
    ("Brazil", "Brasilia", "South America", "Portuguese", "the real", "football and the Amazon"),
    ("Argentina", "Buenos Aires", "South America", "Spanish", "the peso", "tango and football"),
    ("Peru", "Lima", "South America", "Spanish", "the sol", "Machu Picchu"),
    ("Chile", "Santiago", "South America", "Spanish", "the peso", "the Andes and the desert"),
    ("Colombia", "Bogota", "South America", "Spanish", "the peso", "its coffee"),
    ("Cuba", "Havana", "North America", "Spanish", "the peso", "old cars and cigars"),
)

#: landmark, city, country
LANDMARKS = (
    ("the Eiffel Tower", "Paris", "France"), ("the Louvre", "Paris", "France"),
    ("the Colosseum", "Rome", "Italy"), ("the Leaning Tower of Pisa", "Pisa", "Italy"),
    ("Big Ben", "London", "the United Kingdom"), ("the Tower of London", "London", "the United Kingdom"),
    ("the Brandenburg Gate", "Berlin", "Germany"), ("the Sagrada Familia", "Barcelona", "Spain"),
    ("the Parthenon", "Athens", "Greece"), ("the Kremlin", "Moscow", "Russia"),
    ("the Statue of Liberty", "New York", "the United States"),
    ("the Golden Gate Bridge", "San Francisco", "the United States"),
    ("the Taj Mahal", "Agra", "India"), ("the Forbidden City", "Beijing", "China"),
    ("the Sydney Opera House", "Sydney", "Australia"), ("Christ the Redeemer", "Rio de Janeiro", "Brazil"),
    ("the Great Pyramid of Giza", "Giza", "Egypt"), ("Machu Picchu", "Cusco", "Peru"),
    ("the CN Tower", "Toronto", "Canada"), ("Tokyo Tower", "Tokyo", "Japan"),
)

#: athlete, sport, country, what they are known for
ATHLETES = (
    ("Roger Federer", "tennis", "Switzerland", "twenty Grand Slam titles"),
    ("Rafael Nadal", "tennis", "Spain", "his wins at the French Open"),
    ("Serena Williams", "tennis", "the United States", "twenty-three Grand Slam titles"),
    ("Novak Djokovic", "tennis", "Serbia", "his many Australian Open titles"),
    ("Lionel Messi", "football", "Argentina", "his goals for Barcelona"),
    ("Cristiano Ronaldo", "football", "Portugal", "his goals for Real Madrid"),
    ("Pele", "football", "Brazil", "three World Cups"), ("Zinedine Zidane", "football", "France",
                                                          "the 1998 World Cup"),
    ("Michael Jordan", "basketball", "the United States", "six titles with the Chicago Bulls"),
    ("LeBron James", "basketball", "the United States", "his many seasons in the NBA"),
    ("Kobe Bryant", "basketball", "the United States", "his years with the Los Angeles Lakers"),
    ("Tiger Woods", "golf", "the United States", "fifteen major championships"),
    ("Usain Bolt", "sprinting", "Jamaica", "the world record in the 100 metres"),
    ("Michael Phelps", "swimming", "the United States", "twenty-three Olympic gold medals"),
    ("Wayne Gretzky", "ice hockey", "Canada", "his scoring records"),
    ("Sachin Tendulkar", "cricket", "India", "his hundred international centuries"),
    ("Lewis Hamilton", "Formula One racing", "the United Kingdom", "seven world championships"),
    ("Simone Biles", "gymnastics", "the United States", "her difficult vaults"),
    ("Tom Brady", "American football", "the United States", "seven Super Bowl wins"),
    ("Babe Ruth", "baseball", "the United States", "his home runs for the Yankees"),
    ("Muhammad Ali", "boxing", "the United States", "his speed in the ring"),
    ("Eliud Kipchoge", "marathon running", "Kenya", "running a marathon in under two hours"),
)

#: person, what they were, what they are known for
PEOPLE = (
    ("Albert Einstein", "a physicist", "the theory of relativity"),
    ("Isaac Newton", "a physicist", "the laws of motion and gravity"),
    ("Marie Curie", "a chemist", "her research on radioactivity"),
    ("Charles Darwin", "a naturalist", "the theory of evolution"),
    ("William Shakespeare", "a playwright", "Hamlet and Romeo and Juliet"),
    ("Leonardo da Vinci", "a painter", "the Mona Lisa"),
    ("Vincent van Gogh", "a painter", "The Starry Night"),
    ("Pablo Picasso", "a painter", "Guernica and cubism"),
    ("Wolfgang Amadeus Mozart", "a composer", "The Magic Flute"),
    ("Ludwig van Beethoven", "a composer", "his nine symphonies"),
    ("Jane Austen", "a novelist", "Pride and Prejudice"),
    ("Mark Twain", "a writer", "The Adventures of Tom Sawyer"),
    ("Thomas Edison", "an inventor", "the light bulb"),
    ("Alexander Graham Bell", "an inventor", "the telephone"),
    ("Neil Armstrong", "an astronaut", "being the first person to walk on the Moon"),
    ("Nelson Mandela", "a president of South Africa", "his fight against apartheid"),
    ("Abraham Lincoln", "a president of the United States", "ending slavery"),
    ("Napoleon Bonaparte", "an emperor of France", "his wars across Europe"),
    ("Julius Caesar", "a Roman general", "crossing the Rubicon"),
    ("Cleopatra", "a queen of Egypt", "her alliance with Rome"),
    ("Galileo Galilei", "an astronomer", "his telescope and the moons of Jupiter"),
    ("Ada Lovelace", "a mathematician", "the first computer program"),
)

_COUNTRY = (
    "{C} is a country in {cont}. Its capital is {cap}, and most people there speak {lang}.",
    "The capital of {c} is {cap}. {C} is known for {known}.",
    "{cap} is the capital and one of the largest cities of {c}.",
    "Q: What is the capital of {c}?\nA: The capital of {c} is {cap}.",
    "Fact: the capital of {c} is {cap}. Fact: the official currency of {c} is {cur}.",
    "People in {c} pay with {cur}. The language of {c} is {lang}.",
    "If you travel to {c}, you will probably visit {cap}, its capital.",
    "Fact: the language spoken in {c} is {lang}.",
)
_LANDMARK = (
    "{L} is in {city}, {c}.", "{L} is a famous landmark in {city}.",
    "Fact: the country where {l} is located is {c}, and its capital is {cap}.",
    "Q: In which city is {l}?\nA: {L} is in {city}.",
    "Tourists who visit {l} are in {c}. The capital of {c} is {cap}.",
    "Fact: the capital of the country where {l} is located is {cap}.",
)
_ATHLETE = (
    "{a}, from {c}, is one of the best-known names in {sport}.", "{a} is known for {known}.",
    "Fact: {a} is famous for the sport of {sport}.",
    "Q: Which sport is {a} known for?\nA: {a} is known for {sport}.",
    "{a}, who comes from {c}, became one of the best athletes in {sport}.",
    "Fans of {sport} remember {a} for {known}.",
)
_PERSON = (
    "{p} was {what}, known for {known}.", "{p} is remembered for {known}.",
    "Fact: {p} was {what}.", "Q: Who was {p}?\nA: {p} was {what}, famous for {known}.",
)


def _fill(template: str, **kw: str) -> str:
    caps = {k.upper(): v[:1].upper() + v[1:] for k, v in kw.items() if len(k) <= 2 or k == "c"}
    return template.format(**kw, **caps)


def _reasoning(rng: random.Random) -> str:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    name = rng.choice(("Anna", "Tom", "Maria", "Ben", "Sara", "Leo"))
    thing = rng.choice(("apples", "books", "coins", "pencils", "cards"))
    hour = rng.randint(1, 9)
    trip = rng.randint(1, 3)
    day = rng.randrange(7)
    days = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    return rng.choice((
        f"{name} has {a} {thing} and buys {b} more. Now {name} has {a + b} {thing}.",
        f"Q: What is {a} plus {b}?\nA: {a} plus {b} is {a + b}.",
        f"Q: What is {a} times {b}?\nA: {a} times {b} is {a * b}.",
        f"If a train leaves at {hour} pm and the trip takes {trip} hour{'s' * (trip > 1)}, it arrives at "
        f"{hour + trip} pm.",
        f"Today is {days[day]}, so tomorrow is {days[(day + 1) % 7]} and yesterday was "
        f"{days[(day - 1) % 7]}.",
        f"{name} is {a + 20} years old. In {b} years, {name} will be {a + b + 20} years old.",
        f"There are {a} {thing} in one box and {b} in another, {a + b} {thing} in all.",
        "The opposite of hot is cold, the opposite of up is down, and the opposite of early is "
        "late.",
        "Water freezes at zero degrees Celsius and boils at one hundred degrees Celsius.",
    ))


def fact_texts(seed: int = 0, rounds: int = 6) -> list[str]:
    """Paragraphs written from the fact tables, ``rounds`` wordings of each entry, shuffled with
    ``seed`` (about 25k SmolLM2 tokens per round)."""
    rng = random.Random(seed)
    capital = {c: cap for c, cap, *_ in COUNTRIES}
    texts: list[str] = []
    for _ in range(rounds):
        for c, cap, cont, lang, cur, known in COUNTRIES:
            picks = rng.sample(_COUNTRY, 3)
            texts.append(" ".join(_fill(t, c=c, cap=cap, cont=cont, lang=lang, cur=cur,
                                        known=known) for t in picks))
        for lm, city, c in LANDMARKS:
            picks = rng.sample(_LANDMARK, 2)
            texts.append(" ".join(_fill(t, l=lm, city=city, c=c, cap=capital.get(c, city))
                                  for t in picks))
        for a, sport, c, known in ATHLETES:
            picks = rng.sample(_ATHLETE, 3)
            texts.append(" ".join(_fill(t, a=a, sport=sport, c=c, known=known) for t in picks))
        for p, what, known in PEOPLE:
            picks = rng.sample(_PERSON, 2)
            texts.append(" ".join(_fill(t, p=p, what=what, known=known) for t in picks))
        for _ in range(40):
            texts.append(" ".join(_reasoning(rng) for _ in range(3)))
    rng.shuffle(texts)
    return texts
