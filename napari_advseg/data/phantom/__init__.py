"""Procedural, deterministic abdominal CT phantom with four organ labels.

:func:`generate_phantom` draws one synthetic subject from a seed: an int16 volume in Hounsfield
units (HU) and a uint8 label volume (0 background, 1 pancreas, 2 kidneys (left and right),
3 liver, 4 spleen), both of shape ``config.shape``.

Axis convention
---------------
Arrays are indexed ``(z, y, x)``, the standard radiological axial display:

* ``z``: slice index, inferior (0) to superior (last);
* ``y``: rows, anterior (row 0, top of the image) to posterior;
* ``x``: columns, the patient's right (column 0, the viewer's left) to the patient's left.

So the liver lies on the image's left, the spleen on the image's right and posterior, the spine
at the bottom centre and the kidneys either side of it.

Anatomy
-------
Everything is built in millimetres. In-plane, the body is centred in the field of view (and
shrunk as a whole if the field of view is too small for it); along z the volume is centred on a
120 mm reference block of the upper abdomen (liver dome to below the kidneys; craniocaudal
organ extents are about 0.7 times adult ones so that the default 40 x 3 mm volume holds the
whole organ set, with organ-free slices at the inferior end). A different shape or spacing
images the same subject at another resolution or coverage.

Organs are ellipsoids (unions, crescents, a curved tube for the pancreas) whose surfaces are
perturbed by smooth random fields, with per-subject size (about +-15 %), position (about
+-10 mm) and in-plane rotation. Overlaps are resolved by painting order, later wins: liver,
spleen, pancreas, kidneys (each kidney in a shell of perirenal fat cut out of the liver); the
gallbladder, lung bases, vessels, bone and muscle are painted last and carry no label (the
intrahepatic vessels are labelled liver). Organs are clipped to the abdominal cavity.

HU values (contrast-enhanced, portal-venous-like; each subject draws its own value in range;
see ``PhantomConfig.contrast`` and ``tissues._NATIVE`` for native scans and mixed cohorts)
---------------------------------------------------------------------------------------------
air -1000, lung -870..-820, bowel gas -950..-880, subcutaneous fat -110..-90, visceral fat
-100..-80, stool -60..-20, gallbladder 5..20, bowel content 20..40, skin 30..50, muscle 45..60,
bowel wall 60..80, pancreas 80..100, liver 100..110, spleen 110..120, IVC 110..130, portal and
other veins 145..170, hepatic vessels 140..165, aorta 150..180, kidney cortex 160..190, kidney
medulla 45..60, renal pelvis 30..40, costal cartilage 130..200, cancellous bone 250..400,
cortical bone 650..800, intervertebral disc 80..100, spinal canal 15..35.

Each tissue gets a smooth low-frequency texture of a few HU (more for fat, lung, stool and
bone), the image is slightly blurred in-plane (partial volume) and white noise of standard
deviation ``config.noise_hu`` is added. Everything is drawn from ``np.random.default_rng(seed)``:
the same seed and config give bit-identical arrays.

Modules
-------
``config`` (:class:`PhantomConfig`), ``tissues`` (the tissue table and contrast phase),
``geometry`` (coordinates, random fields, shape primitives), ``body`` (outline, wall,
landmarks), ``organs`` (the four labelled organs), ``structures`` (bowel, vessels, bone,
muscle, lungs), ``render`` (classes to HU) and ``generate`` (:func:`generate_phantom`).
"""

from __future__ import annotations

from .config import PhantomConfig
from .generate import generate_phantom

__all__ = ["PhantomConfig", "generate_phantom"]
