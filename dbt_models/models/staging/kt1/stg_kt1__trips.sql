-- One row per kt1 trip id: redelivered copies removed, and of several versions of a trip (KT1
-- may send a trip again as it changes) the last landed one wins.
{{ daily_table('day') }}

with source as (
    {{ lake_source('kt1', 'trips', {
        'batch_id': 'varchar',
        'item_index': 'integer',
        'fetched_at': 'timestamptz',
        'landed_at': 'timestamptz',
        'id': 'varchar',
        'asset_id': 'varchar',
        'asset_name': 'varchar',
        'trip_type': 'varchar',
        'date_start': 'timestamptz',
        'date_end': 'timestamptz',
        'start_lat': 'double',
        'start_lon': 'double',
        'start_address': 'varchar',
        'end_lat': 'double',
        'end_lon': 'double',
        'end_address': 'varchar',
        'stats_drive_time': 'double',
        'stats_idle_time': 'double',
        'stats_distance': 'double',
        'records': 'double',
        'maxes_speed': 'double',
        'day': 'date',
    }) }}
),

typed as (
    select
        id as source_trip_id,
        asset_id as source_vehicle_id,
        asset_name,
        trip_type,
        cast(date_start as timestamptz) as started_at,
        cast(date_end as timestamptz) as ended_at,
        stats_drive_time as drive_time_s,
        stats_idle_time as idle_time_s,
        stats_distance as distance_km,
        maxes_speed as max_speed_kmh,
        records as telemetry_records,
        start_lat,
        start_lon,
        start_address,
        end_lat,
        end_lon,
        end_address,
        batch_id,
        item_index,
        cast(fetched_at as timestamptz) as fetched_at,
        cast(landed_at as timestamptz) as landed_at,
        cast(day as date) as day
    from source
),

deduplicated as (
    select *
    from typed
    qualify row_number() over (
        partition by source_trip_id
        order by landed_at desc, fetched_at desc, item_index desc
    ) = 1
),

final as (
    select
        md5('kt1|' || source_trip_id) as kt1_trip_id,
        *,
        date_diff('second', started_at, ended_at) as duration_s
    from deduplicated
)

select * from final
