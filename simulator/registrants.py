"""Synthetic Indonesian registrants, deterministic for a seed and generated lazily.

Interface (shared by the live driver, the sample origin and the Locust scenarios):

- `Population(seed, size, mix=PopulationMix())`: `population[i]` (or `population.registrant(i)`)
  builds registrant `i` from an RNG derived from `(seed, i)` only, so any registrant can be
  built alone, in any order, without holding the population in memory. `iter(population)`
  yields them in index order; `len(population)` is `size`.
- `Registrant`: a frozen dataclass. `registrant_id` is the opaque id sent to the queue as
  `{"registrant": ...}`; it does not reveal the NIK.
- `NETWORK_CLASSES`: `2g`, `3g`, `4g`, `wifi` with round-trip time and bandwidth.
- `nik_is_valid(nik, today=None) -> bool` and `parse_nik(nik, today=None) -> NikInfo` (raises
  `InvalidNik` with a reason): the structural KTP check the sample origin performs.
- `kk_is_valid(kk) -> bool`: structural check of a family card (Kartu Keluarga) number.

NIK structure (16 digits): `PPRRDD` Kemendagri region code of the district (province, regency,
district), `DDMMYY` birth date with 40 added to the day for women, `SSSS` serial (0001-9999).
KK structure (16 digits): the same region code, the issue date `DDMMYY`, a 4-digit serial.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from queue_service import identity

# ----------------------------------------------------------------------------- region codes


@dataclass(frozen=True)
class Region:
    """One district: `code` is the 6-digit `PPRRDD` used in NIK and KK numbers."""

    code: str
    province_code: str
    province_name: str
    regency_code: str
    regency_name: str


@dataclass(frozen=True)
class RegionTable:
    regions: tuple[Region, ...]
    # cumulative weights over `regions` (province population spread over its districts)
    cumulative_weights: tuple[float, ...]
    province_codes: frozenset[str]
    province_names: dict[str, str] = field(hash=False)

    def pick(self, rng: random.Random) -> Region:
        return rng.choices(self.regions, cum_weights=self.cumulative_weights, k=1)[0]


@cache
def region_table() -> RegionTable:
    """The bundled Kemendagri code subset (`simulator/data/regions.csv`), loaded once."""
    text = (Path(__file__).resolve().parent / "data" / "regions.csv").read_text("utf-8")
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    reader = csv.DictReader(rows)
    regions: list[Region] = []
    districts_per_province: dict[str, int] = {}
    population: dict[str, float] = {}
    names: dict[str, str] = {}
    for row in reader:
        pcode = row["province_code"]
        names[pcode] = row["province_name"]
        population[pcode] = float(row["population_m"])
        for district in row["districts"].split():
            regions.append(
                Region(
                    code=row["regency_code"] + district,
                    province_code=pcode,
                    province_name=row["province_name"],
                    regency_code=row["regency_code"],
                    regency_name=row["regency_name"],
                )
            )
            districts_per_province[pcode] = districts_per_province.get(pcode, 0) + 1
    cumulative: list[float] = []
    total = 0.0
    for region in regions:
        pcode = region.province_code
        total += population[pcode] / districts_per_province[pcode]
        cumulative.append(total)
    return RegionTable(tuple(regions), tuple(cumulative), frozenset(names), names)


# ----------------------------------------------------------------------------- NIK and KK


class InvalidNik(ValueError):
    """A NIK that does not have the structure of an Indonesian NIK; the message says why."""


@dataclass(frozen=True)
class NikInfo:
    region_code: str
    province_code: str
    regency_code: str
    district_code: str
    birth_date: dt.date
    sex: str  # "F" or "M"


def _resolve_year(yy: int, today: dt.date) -> int:
    # Two-digit years: the most recent century that does not put the birth in the future.
    year = 2000 + yy
    return year if year <= today.year else 1900 + yy


def parse_nik(nik: str, today: dt.date | None = None) -> NikInfo:
    """Parse a NIK, raising `InvalidNik` with a reason if its structure is wrong: the queue
    service's own structure check (`queue_service.identity.parse_nik`), plus the full birth
    date (century included) that only a registrant's data needs."""
    today = today or dt.date.today()
    if not isinstance(nik, str):
        raise InvalidNik("a NIK has exactly 16 digits")
    try:
        parts = identity.parse_nik(nik)
    except identity.InvalidNik as exc:
        raise InvalidNik(str(exc)) from None
    if parts.province not in region_table().province_codes:
        raise InvalidNik(f"unknown province code {parts.province}")
    try:
        birth = dt.date(_resolve_year(parts.year_2digit, today), parts.month, parts.day)
    except ValueError:
        raise InvalidNik("the birth date DDMMYY (day + 40 for women) is not a date") from None
    return NikInfo(
        nik[0:6], parts.province, nik[0:4], nik[0:6], birth, "F" if parts.female else "M"
    )


def nik_is_valid(nik: str, today: dt.date | None = None) -> bool:
    try:
        parse_nik(nik, today)
    except InvalidNik:
        return False
    return True


def kk_is_valid(kk: str) -> bool:
    """Structural check of a KK number: 16 digits, known province, a real issue date."""
    if not isinstance(kk, str) or len(kk) != 16 or not kk.isascii() or not kk.isdigit():
        return False
    if kk[0:2] not in region_table().province_codes or kk[2:4] == "00" or kk[4:6] == "00":
        return False
    try:
        dt.date(2000 + int(kk[10:12]), int(kk[8:10]), int(kk[6:8]))
    except ValueError:
        return False
    return kk[12:16] != "0000"


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


# ----------------------------------------------------------------------------- network classes


@dataclass(frozen=True)
class NetworkClass:
    name: str
    rtt_ms: float  # typical round trip to a Jakarta data centre
    bandwidth_kbps: float  # typical downstream bandwidth
    weight: float  # default share of registrants [E]


NETWORK_CLASSES: dict[str, NetworkClass] = {
    "2g": NetworkClass("2g", 650.0, 60.0, 0.03),
    "3g": NetworkClass("3g", 200.0, 1_500.0, 0.17),
    "4g": NetworkClass("4g", 70.0, 12_000.0, 0.55),
    "wifi": NetworkClass("wifi", 30.0, 25_000.0, 0.25),
}

# ----------------------------------------------------------------------------- names

MALE_NAMES = [
    "Agus",
    "Budi",
    "Dedi",
    "Eko",
    "Fajar",
    "Hendra",
    "Irfan",
    "Joko",
    "Kurniawan",
    "Rizki",
    "Muhammad",
    "Ahmad",
    "Andi",
    "Arif",
    "Bayu",
    "Dimas",
    "Fikri",
    "Gilang",
    "Hadi",
    "Ilham",
    "Indra",
    "Putra",
    "Rudi",
    "Slamet",
    "Sutrisno",
    "Teguh",
    "Wahyu",
    "Yusuf",
    "Bambang",
    "Dwi",
    "Adi",
    "Rahmat",
    "Taufik",
    "Rian",
    "Aditya",
    "Bagus",
    "Yoga",
    "Hafiz",
    "Reza",
    "Galih",
    "Firmansyah",
    "Ketut",
    "Made",
    "Wayan",
    "Nyoman",
    "Ucok",
    "Asep",
    "Ujang",
    "Daeng",
    "Frans",
    "Yohanes",
    "Stefanus",
    "Samuel",
]
FEMALE_NAMES = [
    "Siti",
    "Sri",
    "Dewi",
    "Ayu",
    "Putri",
    "Nur",
    "Rina",
    "Wulan",
    "Indah",
    "Lestari",
    "Fitri",
    "Ratna",
    "Yuliana",
    "Ani",
    "Kartika",
    "Maya",
    "Novi",
    "Dian",
    "Intan",
    "Rahmawati",
    "Nurul",
    "Aisyah",
    "Annisa",
    "Citra",
    "Dinda",
    "Eka",
    "Febri",
    "Hana",
    "Laila",
    "Mega",
    "Nadia",
    "Oktaviani",
    "Puspita",
    "Rani",
    "Sari",
    "Tari",
    "Utami",
    "Vina",
    "Widya",
    "Yanti",
    "Zahra",
    "Anggun",
    "Fatimah",
    "Melati",
    "Ni",
    "Luh",
    "Kadek",
    "Maria",
    "Yohana",
    "Grace",
    "Theresia",
]
FAMILY_NAMES = [
    "Santoso",
    "Wijaya",
    "Saputra",
    "Hidayat",
    "Kusuma",
    "Pratama",
    "Nugroho",
    "Setiawan",
    "Susanto",
    "Gunawan",
    "Halim",
    "Siregar",
    "Nasution",
    "Lubis",
    "Harahap",
    "Simanjuntak",
    "Sitompul",
    "Panjaitan",
    "Hutapea",
    "Sinaga",
    "Pane",
    "Tanjung",
    "Rangkuti",
    "Batubara",
    "Situmorang",
    "Manurung",
    "Simatupang",
    "Pardede",
    "Ginting",
    "Tarigan",
    "Sembiring",
    "Sitepu",
    "Wibowo",
    "Purnomo",
    "Prasetyo",
    "Hartono",
    "Suryadi",
    "Rahman",
    "Hakim",
    "Syahputra",
    "Firdaus",
    "Ramadhan",
    "Kurnia",
    "Permana",
    "Hasibuan",
    "Daulay",
    "Pohan",
    "Sihombing",
    "Tambunan",
    "Mandagi",
    "Lumban",
    "Tobing",
    "Mamahit",
    "Pattimura",
    "Latuconsina",
    "Rumbiak",
    "Wanggai",
    "Manuhutu",
]
EMAIL_DOMAINS = (
    ("gmail.com", 0.78),
    ("yahoo.com", 0.08),
    ("yahoo.co.id", 0.06),
    ("outlook.com", 0.04),
    ("ymail.com", 0.02),
    ("hotmail.com", 0.02),
)
# Indonesian mobile prefixes after +62 (Telkomsel, Indosat, XL/Axis, Tri, Smartfren).
PHONE_PREFIXES = [
    "811",
    "812",
    "813",
    "821",
    "822",
    "823",
    "851",
    "852",
    "853",
    "814",
    "815",
    "816",
    "855",
    "856",
    "857",
    "858",
    "817",
    "818",
    "819",
    "859",
    "877",
    "878",
    "831",
    "832",
    "833",
    "838",
    "895",
    "896",
    "897",
    "898",
    "899",
    "881",
    "882",
    "883",
    "884",
    "885",
    "886",
    "887",
    "888",
    "889",
]

# ----------------------------------------------------------------------------- registrants


@dataclass(frozen=True)
class PopulationMix:
    """Shares and distributions of a population; every share is a probability in [0, 1]."""

    female_share: float = 0.5
    # age in years at the wave date: 18-64 mostly; a small share under 18 exercises the
    # origin's age check (rejected at the KTP step).
    age_min: int = 18
    age_max: int = 64
    underage_share: float = 0.005
    # scripted clients (automation, not joki accounts): 2-5% of sessions [E]
    bot_share: float = 0.03
    # accounts held by "joki" proxy operators (also automated): 1% of accounts [E]
    joki_share: float = 0.01
    joki_accounts_per_operator: int = 100
    network_weights: tuple[tuple[str, float], ...] = tuple(
        (c.name, c.weight) for c in NETWORK_CLASSES.values()
    )
    # reneging patience: lognormal, median 45 min, sigma 1.0 [E]
    patience_median_s: float = 45 * 60.0
    patience_sigma: float = 1.0
    # humans: 30% refresh by hand every U(10, 60) s, 15% keep 2-3 tabs [E]
    manual_refresh_share: float = 0.30
    multi_tab_share: float = 0.15
    # households: share of consecutive index pairs (2k, 2k+1) that share a family card (KK)
    shared_kk_share: float = 0.2
    # date the ages are computed against (the wave date)
    reference_date: dt.date = dt.date(2026, 4, 11)

    def __post_init__(self) -> None:
        for name in (
            "female_share",
            "underage_share",
            "bot_share",
            "joki_share",
            "manual_refresh_share",
            "multi_tab_share",
            "shared_kk_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.bot_share + self.joki_share > 1.0:
            raise ValueError("bot_share + joki_share must be at most 1")
        if not 0 < self.age_min <= self.age_max:
            raise ValueError("need 0 < age_min <= age_max")
        if self.joki_accounts_per_operator < 1:
            raise ValueError("joki_accounts_per_operator must be at least 1")
        if self.patience_median_s <= 0 or self.patience_sigma < 0:
            raise ValueError("patience_median_s must be > 0 and patience_sigma >= 0")
        unknown = [n for n, _ in self.network_weights if n not in NETWORK_CLASSES]
        if unknown:
            raise ValueError(f"unknown network classes {unknown}; known: {list(NETWORK_CLASSES)}")


@dataclass(frozen=True)
class Registrant:
    index: int  # position in the population, 0-based
    registrant_id: str  # opaque id sent to the queue (`{"registrant": ...}`), 19 chars
    nik: str  # 16 digits: PPRRDD + DDMMYY (day + 40 for women) + serial
    kk: str  # 16-digit family card number with the same region prefix
    name: str
    sex: str  # "M" or "F"
    birth_date: dt.date
    age: int  # on the population's reference date
    phone: str  # "+628..."
    email: str
    province_code: str
    regency_code: str  # 4 digits
    district_code: str  # 6 digits, the NIK's region prefix
    network: NetworkClass
    patience_s: float  # how long this person will wait in a queue before reneging
    retry_habit: str  # "human" (F5 / walk away mixture) or "full_jitter" (scripted client)
    manual_refresher: bool  # refreshes the waiting page by hand instead of trusting the poll
    tabs: int  # browser tabs / devices used at once (1, or 2-3)
    is_bot: bool  # automated client: polls fast and ignores Retry-After
    operator_id: int | None  # joki operator holding this account, None for everyone else

    @property
    def is_joki(self) -> bool:
        return self.operator_id is not None


def _derived_rng(seed: int, stream: str, index: int) -> random.Random:
    """An RNG that depends only on (seed, stream, index): stable across runs and platforms."""
    digest = hashlib.blake2b(f"{seed}:{stream}:{index}".encode(), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _registrant_id(seed: int, index: int) -> str:
    digest = hashlib.blake2b(f"{seed}:id:{index}".encode(), digest_size=8).hexdigest()
    return f"r-{digest}"


def _birth_date(rng: random.Random, mix: PopulationMix) -> dt.date:
    ref = mix.reference_date
    if rng.random() < mix.underage_share:
        youngest, oldest = 14, 17
    else:
        youngest, oldest = mix.age_min, mix.age_max
    # Younger people are over-represented among online registrants: triangular, mode at youngest.
    age_years = rng.triangular(youngest, oldest + 1, youngest)
    birth = ref - dt.timedelta(days=int(age_years * 365.25))
    return birth


def _household(seed: int, index: int, mix: PopulationMix) -> tuple[bool, random.Random]:
    """Whether `index` shares a KK with its pair partner, and the household's RNG."""
    pair = index // 2
    rng = _derived_rng(seed, "household", pair)
    shared = rng.random() < mix.shared_kk_share
    return shared, rng


class Population:
    """A lazily generated, deterministic population of `size` registrants."""

    def __init__(self, seed: int, size: int, mix: PopulationMix | None = None) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.seed = seed
        self.size = size
        self.mix = mix or PopulationMix()
        self._network_names = [n for n, _ in self.mix.network_weights]
        self._network_weights = [w for _, w in self.mix.network_weights]
        joki_accounts = max(1, round(size * self.mix.joki_share))
        self.joki_operators = max(1, math.ceil(joki_accounts / self.mix.joki_accounts_per_operator))

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Registrant]:
        return (self.registrant(i) for i in range(self.size))

    def __getitem__(self, index: int) -> Registrant:
        return self.registrant(index)

    def registrant(self, index: int) -> Registrant:
        if not 0 <= index < self.size:
            raise IndexError(f"registrant index {index} outside 0..{self.size - 1}")
        mix = self.mix
        rng = _derived_rng(self.seed, "registrant", index)
        table = region_table()

        shared_kk, household_rng = _household(self.seed, index, mix)
        # A shared household lives in one district; otherwise each person picks their own.
        region = table.pick(household_rng if shared_kk else rng)

        sex = "F" if rng.random() < mix.female_share else "M"
        birth = _birth_date(rng, mix)
        day = birth.day + (40 if sex == "F" else 0)
        serial = rng.randint(1, 9999)
        nik = f"{region.code}{day:02d}{birth.month:02d}{birth.year % 100:02d}{serial:04d}"

        kk_rng = household_rng if shared_kk else rng
        issued = dt.date(2010, 1, 1) + dt.timedelta(days=kk_rng.randrange(5000))
        kk_serial = kk_rng.randint(1, 9999)
        kk = (
            f"{region.code}{issued.day:02d}{issued.month:02d}{issued.year % 100:02d}{kk_serial:04d}"
        )

        first = rng.choice(FEMALE_NAMES if sex == "F" else MALE_NAMES)
        shape = rng.random()
        if shape < 0.25:  # many Indonesians have a single name
            name = first
        elif shape < 0.8:
            name = f"{first} {rng.choice(FAMILY_NAMES)}"
        else:
            second = rng.choice(FEMALE_NAMES if sex == "F" else MALE_NAMES)
            name = f"{first} {second} {rng.choice(FAMILY_NAMES)}"

        phone = f"+62{rng.choice(PHONE_PREFIXES)}{rng.randrange(10**7, 10**8)}"
        local = ".".join(name.lower().split()[:2]).replace("'", "")
        domains, weights = zip(*EMAIL_DOMAINS, strict=True)
        email = f"{local}{rng.randrange(1, 9999)}@{rng.choices(domains, weights)[0]}"

        network = NETWORK_CLASSES[rng.choices(self._network_names, self._network_weights)[0]]
        patience = mix.patience_median_s * math.exp(mix.patience_sigma * rng.gauss(0.0, 1.0))

        kind = rng.random()
        operator_id: int | None = None
        if kind < mix.joki_share:
            operator_id = rng.randrange(self.joki_operators)
            is_bot = True
        else:
            is_bot = kind < mix.joki_share + mix.bot_share
        manual = (not is_bot) and rng.random() < mix.manual_refresh_share
        tabs = rng.choice((2, 3)) if (not is_bot and rng.random() < mix.multi_tab_share) else 1

        return Registrant(
            index=index,
            registrant_id=_registrant_id(self.seed, index),
            nik=nik,
            kk=kk,
            name=name,
            sex=sex,
            birth_date=birth,
            age=age_on(birth, mix.reference_date),
            phone=phone,
            email=email,
            province_code=region.province_code,
            regency_code=region.regency_code,
            district_code=region.code,
            network=network,
            patience_s=patience,
            retry_habit="full_jitter" if is_bot else "human",
            manual_refresher=manual,
            tabs=tabs,
            is_bot=is_bot,
            operator_id=operator_id,
        )
