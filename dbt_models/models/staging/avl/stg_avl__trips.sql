-- One row per AVL trip. The lake already holds UTC timestamps and one row per natural key
-- (device_name, trip_start) per landing; the window below also guards against a trip that was
-- landed in two partitions by an earlier, differently-zoned run.
{{ daily_table('day') }}

with source as (
    {{ lake_source('avl', 'trips', {
        'device_name': 'varchar',
        'trip_start': 'timestamptz',
        'trip_start_local': 'varchar',
        'trip_start_address': 'varchar',
        'trip_start_lat': 'double',
        'trip_start_lon': 'double',
        'trip_end': 'timestamptz',
        'trip_end_local': 'varchar',
        'trip_end_address': 'varchar',
        'trip_end_lat': 'double',
        'trip_end_lon': 'double',
        'kms': 'double',
        'duration_min': 'double',
        'idle_min': 'double',
        'max_speed': 'double',
        'fuel': 'double',
        'cost': 'double',
        'extracted_at': 'timestamptz',
        'day': 'date',
    }) }}
),

typed as (
    select
        md5(
            'avl|' || device_name || '|'
            || strftime(cast(trip_start as timestamptz) at time zone 'UTC', '%Y-%m-%dT%H:%M:%S')
        ) as avl_trip_id,
        device_name || '|'
        || strftime(cast(trip_start as timestamptz) at time zone 'UTC', '%Y-%m-%dT%H:%M:%SZ')
            as source_trip_id,
        device_name as source_vehicle_id,
        device_name,
        cast(trip_start as timestamptz) as started_at,
        cast(trip_end as timestamptz) as ended_at,
        trip_start_address as start_address,
        trip_start_lat as start_lat,
        trip_start_lon as start_lon,
        trip_end_address as end_address,
        trip_end_lat as end_lat,
        trip_end_lon as end_lon,
        kms as distance_km,
        -- The start and end are to the second; the API's duration_min is rounded to minutes.
        coalesce(
            epoch(cast(trip_end as timestamptz)) - epoch(cast(trip_start as timestamptz)),
            duration_min * 60
        ) as duration_s,
        -- idle_min is all the API gives (whole minutes); never more than the trip itself.
        least(
            idle_min * 60,
            coalesce(
                epoch(cast(trip_end as timestamptz)) - epoch(cast(trip_start as timestamptz)),
                duration_min * 60
            )
        ) as idle_s,
        max_speed as max_speed_kmh,
        -- The API reports 0 when no consumption rate or price is configured: unknown, not zero.
        nullif(fuel, 0) as fuel_used_l,
        nullif(cost, 0) as fuel_cost,
        extracted_at,
        cast(day as date) as day
    from source
),

final as (
    {{ latest_landing('typed', 'device_name, started_at', 'extracted_at desc') }}
)

select * from final
