-- A QR image is rendered when it is first fetched, not when its code is shown: most logins
-- never fetch the image (clients draw the code themselves), and rendering 512×512 pixels costs
-- milliseconds of CPU. `code` is what the image shows; `png` holds it once rendered. Rows from
-- before this migration have their PNG and no code.
ALTER TABLE qr_images
    ADD COLUMN code text,
    ALTER COLUMN png DROP NOT NULL,
    ADD CONSTRAINT qr_images_code_or_png CHECK (code IS NOT NULL OR png IS NOT NULL);
